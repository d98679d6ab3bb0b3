"""The ``dtda`` command line: ``demo``, ``run``, the stages ``train``/``attribute``/``report``, ``verify``,
``diagnose``, ``info``, and the retraining checks ``confirm``/``evaluate`` (:mod:`dtda.retrain_checks`).

Exit codes: 0 success; 2 invalid configuration or arguments (every problem listed); 1 the run
could not go on (a directory made for another config or in use, failed seeds, a file that cannot
be written), or ``verify`` found a problem.
Reference: ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
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
    p = sub.add_parser("diagnose", help="unrolling against an influence function at every recorded checkpoint "
                                        "(PAPER Fig. 3), into RUN/diagnose/")
    p.add_argument("target", help="run directory")
    p.add_argument("--method", default="exact", help="influence method (default: %(default)s)")
    p.add_argument("--measurements", type=int, default=2, help="first measurements diagnosed (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=2, help="first seeds diagnosed (default: %(default)s)")
    p.add_argument("--quiet", action="store_true")
    p = sub.add_parser("verify", help="check every file of a run directory against its manifest (changes nothing)")
    p.add_argument("target", help="run directory")
    from dtda import retrain_checks as checks

    checks.add_parsers(sub)
    return parser


def _verify(target: str) -> int:
    from dtda.rundir import RunDir

    run = RunDir(target)
    if not run.config_path.is_file():
        print(f"dtda: {target} is not a dtda run directory (no {RunDir.CONFIG})", file=sys.stderr)
        return EXIT_FAILED
    problems = run.verify()
    for line in problems:
        print(f"{run.path / line}")
    if problems:
        print(f"dtda verify: {len(problems)} problem(s) in {run.path}; `dtda run` on it recomputes what can "
              "be recomputed", file=sys.stderr)
        return EXIT_FAILED
    print(f"dtda verify: {len(run.manifest.files)} files verified in {run.path}", file=sys.stderr)
    return 0


def _overrides(args) -> dict:
    e = {k: v for k, v in (("executor", args.executor), ("workers", args.workers), ("address", args.address))
         if v is not None}
    return {"execution": e} if e else {}


def _create(config: dict, out: str, args):
    """A new (or resumed) run of ``config`` in directory ``out``; ``--out`` must not name a file."""
    from dtda import config as cfgmod
    from dtda.pipeline import Run

    if Path(out).exists() and not Path(out).is_dir():
        problem = (f"--out: {out} is a file, not a run directory; give a directory path (new or an existing "
                   "run) or move the file away")
        raise cfgmod.ConfigError([problem], "command line")
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


def _check_diagnose(args) -> None:
    from dtda.attribute import method_options
    from dtda.config import ConfigError

    problems = []
    if args.method not in method_options() or args.method == "unroll":
        problems.append(f"--method: expected an influence method ({', '.join(list(method_options())[1:])}), "
                        f"found {args.method!r}")
    problems += [f"--{name}: expected an integer >= 1, found {value}"
                 for name, value in (("measurements", args.measurements), ("seeds", args.seeds)) if value < 1]
    if problems:
        raise ConfigError(problems, "command line")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "info":
        from dtda.info import report

        print(report())
        return 0
    if args.command == "verify":
        return _verify(args.target)

    from dtda.config import ConfigError
    from dtda.sources import DataError
    from dtda.pipeline import Run, RunError
    from dtda.rundir import RunDirError
    from dtda.train.executors import TaskFailed

    run = None
    try:
        from dtda import retrain_checks as checks

        if args.command in checks.COMMANDS:
            return checks.run_command(args)
        if args.command == "report":
            run = Run.open(args.target, quiet=args.quiet)
            print(run.report() / "index.html")
            return 0
        if args.command == "diagnose":
            _check_diagnose(args)
            run = Run.open(args.target, quiet=args.quiet)
            print(run.diagnose(args.method, args.measurements, args.seeds) / "diagnose.md")
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
            run.statistics()
        else:
            print(run.all() / "index.html")
    except ConfigError as e:
        print(f"dtda: invalid configuration, {e}", file=sys.stderr)
        return EXIT_CONFIG
    except (RunDirError, RunError, DataError, TaskFailed) as e:
        print(f"dtda: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:  # a full disk, a read-only directory: every file already written is intact
        where = f" {e.filename}" if e.filename else ""
        print(f"dtda: cannot write{where}: {e.strerror or e}. Every file written before is intact; free space "
              "or fix the permissions, then rerun the same command to resume", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if run is not None:
            run.close()
    return 0

