"""``python _killer.py ARGS``: ``dtda ARGS`` that kills itself with SIGKILL at a chosen point.

Environment:
- ``FAULT_HOOK``: ``record`` (the n-th manifest record of a stage's files, before it is recorded:
  the file is in place but unrecorded) or ``replace`` (the n-th rename of a stage's file into
  place, before it happens: its temporary is left behind);
- ``FAULT_STAGE``: ``train`` (member files), ``attribute`` (shards, samples), ``statistics``
  (statistics, summary) or ``report``;
- ``FAULT_N``: n (1-based);
- ``FAULT_PIDS``: where to write the pids of this process's descendants just before it dies.

Only this (driver) process is patched; spawned workers import this file as ``__mp_main__`` and
run nothing of it.
"""

import json
import os
import signal
import sys
from pathlib import Path


def stage_of(path) -> str | None:
    path = Path(path)
    if "members" in path.parts:
        return "train"
    if "shards" in path.parts or path.name == "samples.safetensors":
        return "attribute"
    if path.name in ("statistics.safetensors", "summary.json"):
        return "statistics"
    if path.name == "report" or "report" in path.parts:
        return "report"
    return None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, from /proc (Linux)."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            parent_of[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        children = [c for c, pp in parent_of.items() if pp == p]
        found += children
        frontier += children
    return found


def main() -> int:
    hook, stage, n = os.environ["FAULT_HOOK"], os.environ["FAULT_STAGE"], int(os.environ["FAULT_N"])
    calls = 0

    def maybe_die(paths) -> None:
        nonlocal calls
        if any(stage_of(p) == stage for p in paths):
            calls += 1
            if calls == n:
                Path(os.environ["FAULT_PIDS"]).write_text(json.dumps(descendants(os.getpid())))
                os.kill(os.getpid(), signal.SIGKILL)

    if hook == "record":
        from dtda.rundir.manifest import Manifest

        record = Manifest.record

        def patched_record(self, paths, inputs=()):
            paths = list(paths)
            maybe_die(paths)
            return record(self, paths, inputs)

        Manifest.record = patched_record
    else:
        replace = os.replace

        def patched_replace(src, dst, **kw):
            maybe_die([dst])
            return replace(src, dst, **kw)

        os.replace = patched_replace
    from dtda import cli

    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
