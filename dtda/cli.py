"""The ``dtda`` command line: ``demo``, ``run``, the stages ``train``/``attribute``/``report``, ``info``.

Exit codes: 0 success; 2 invalid configuration or arguments (every problem listed); 1 the run
could not go on (a directory made for another config, failed seeds, missing stage inputs).
Reference: ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

EXIT_FAILED, EXIT_CONFIG = 1, 2


def _run_options(p: argparse.ArgumentParser, out_default: str | None = None) -> None:
    p.add_argument("--out", default=out_default, help="run directory (default: %(default)s)")
    p.add_argument("--force", action="store_true",
                   help="if the run directory exists, move it aside to <out>.moved-<timestamp> and start anew")
    p.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    p.add_argument("--executor", choices=("local", "process", "ray"), help="override execution.executor")
    p.add_argument("--workers", type=int, help="override execution.workers")
    p.add_argument("--address", help="override execution.address (ray)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dtda", description="Distributional training data attribution")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, native modules, CUDA archs, Triton and the backend per op")
    p = sub.add_parser("demo", help="the built-in digits example, end to end, with a report")
    _run_options(p, None)
    p.add_argument("--quick", action="store_true", help="fewer seeds and steps (well under a minute)")
    for name, text in (("run", "every stage of a run: train, attribute, statistics, report"),
                       ("train", "stage 1: train the ensemble members"),
                       ("attribute", "stage 2 and 3: per-seed attribution, samples and statistics")):
        p = sub.add_parser(name, help=text)
        p.add_argument("target", help="CONFIG.toml (new or resumed run, see --out) or an existing run directory")
        _run_options(p)
    p = sub.add_parser("report", help="stage 4: (re)write the report of a run directory")
    p.add_argument("target", help="run directory")
    p.add_argument("--quiet", action="store_true")
    return parser


def _overrides(args) -> dict:
    e = {k: v for k, v in (("executor", args.executor), ("workers", args.workers), ("address", args.address))
         if v is not None}
    return {"execution": e} if e else {}


def _create(config: dict, out: str, args):
    """A new (or resumed) run of ``config`` in directory ``out``; ``--out`` must not name a file."""
    from dtda import config as cfgmod
    from dtda.pipeline import Run

    if Path(out).exists() and not Path(out).is_dir():
        raise cfgmod.ConfigError([f"--out: {out} is a file, not a run directory; give a directory path "
                                  "(new or an existing run) or move the file away"], "command line")
    return Run.create(config, out, force=args.force, quiet=args.quiet)


def _open(args, demo_config: dict | None = None):
    """The :class:`dtda.pipeline.Run` named by the arguments (a new, resumed or existing run)."""
    from dtda import config as cfgmod
    from dtda.pipeline import Run

    overrides = _overrides(args)
    if demo_config is not None:
        for section, values in overrides.items():
            demo_config[section].update(values)
        config = cfgmod.validate(demo_config, source="demo config")
        return _create(config, args.out or ("dtda-demo-quick" if args.quick else "dtda-demo"), args)
    target = Path(args.target)
    if target.is_dir():
        if args.out:
            raise cfgmod.ConfigError([f"--out: {target} is a run directory; --out applies only to a CONFIG.toml"],
                                     "command line")
        return Run.open(target, quiet=args.quiet, overrides=overrides)
    config = cfgmod.load(target, overrides)
    return _create(config, args.out or str(Path("runs") / target.stem), args)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        from dtda.info import report

        print(report())
        return 0

    from dtda.config import ConfigError
    from dtda.sources import DataError
    from dtda.pipeline import Run, RunError
    from dtda.rundir import RunDirError
    from dtda.train.executors import TaskFailed

    try:
        if args.command == "report":
            run = Run.open(args.target, quiet=args.quiet)
            print(run.report() / "index.html")
            return 0
        if args.command == "demo":
            from dtda import demo

            run = _open(args, demo.config(args.quick))
        else:
            run = _open(args)
        print(f"run directory: {run.dir.path}", file=sys.stderr)
        if args.command == "train":
            run.train()
        elif args.command == "attribute":
            run.attribute()
            run.statistics()
        else:
            print(run.all() / "index.html")
    except ConfigError as e:
        print(f"dtda: invalid configuration, {e}", file=sys.stderr)
        return EXIT_CONFIG
    except (RunDirError, RunError, DataError, TaskFailed) as e:
        print(f"dtda: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:  # a read-only or full run directory, a path that vanished: one line
        print(f"dtda: {_os_problem(e)}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _os_problem(e: OSError) -> str:
    """An operating-system error as one line: what failed, on which path, and the fix."""
    where = f" {e.filename}" if e.filename else ""
    fix = {errno.EACCES: "make the run directory writable (or copy it somewhere writable) and rerun",
           errno.EPERM: "make the run directory writable (or copy it somewhere writable) and rerun",
           errno.EROFS: "the file system is read-only: copy the run directory somewhere writable and rerun",
           errno.ENOSPC: "free disk space (or move the run directory) and rerun; finished work is kept"}
    return (f"cannot use{where}: {e.strerror or e}; "
            f"{fix.get(e.errno, 'check the path and its permissions, then rerun')}")
