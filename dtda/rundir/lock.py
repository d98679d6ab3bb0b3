"""One driver per run directory: an advisory lock file holding the driver's pid.

``<run>/.lock`` is locked with ``flock`` while a driver works in the directory. The kernel drops
the lock when the process ends, however it ends (``kill -9`` included), so a lock is never stale
in effect; a lock file left by a killed driver is taken over with one line saying so. The lock is
re-entrant within one process (the same driver may open a run twice).
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from dtda.rundir.errors import RunDirError

NAME = ".lock"

# realpath of the run directory -> (open file descriptor holding the flock, times acquired)
_held: dict[str, tuple[int, int]] = {}


def acquire(root: str | os.PathLike) -> None:
    """Lock run directory ``root`` for this process, or raise :class:`RunDirError` naming the holder."""
    key = os.path.realpath(root)
    if key in _held:
        fd, n = _held[key]
        _held[key] = (fd, n + 1)
        return
    path = Path(key) / NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"cannot lock run directory {root}: {e.strerror} ({path}); the directory must be "
                              "writable for a run (use `dtda verify` to check a read-only run)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise RunDirError(f"run directory {root} is in use by another dtda process (pid {holder}); wait for it "
                              "to finish or stop it: two drivers must not write one run") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and our flock: try again
    previous = _read_pid(fd)
    if previous not in (None, os.getpid()):
        print(f"{root}: taking over the lock of process {previous}, which is no longer running", file=sys.stderr)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[key] = (fd, 1)


def release(root: str | os.PathLike) -> None:
    """Undo one :func:`acquire`; the last one removes the lock file and unlocks."""
    key = os.path.realpath(root)
    if key not in _held:
        return
    fd, n = _held.pop(key)
    if n > 1:
        _held[key] = (fd, n - 1)
        return
    try:
        os.unlink(Path(key) / NAME)
    except OSError:
        pass  # moved aside with its directory, or already gone: the flock still ends with close
    os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
