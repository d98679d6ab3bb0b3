"""The ``dtda`` command line (``dtda info``; the run commands arrive with the demo)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dtda", description="Distributional training data attribution")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, native modules, CUDA archs, Triton and the backend per op")
    args = parser.parse_args(argv)
    if args.command == "info":
        from dtda.info import report

        print(report())
    return 0
