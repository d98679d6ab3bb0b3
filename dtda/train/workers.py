"""What every seed task and worker process does, whichever executor runs it.

- :func:`torch_threads`: a seed task runs with a fixed number of torch threads, so its numbers
  do not depend on the executor (float sums are split differently over 1 and 2 threads).
- :func:`exit_with_parent`: a worker process ends when its driver ends, however the driver ends
  (``kill -9`` included): Linux delivers SIGKILL on the parent's death (``PR_SET_PDEATHSIG``), and
  a watchdog thread polling the parent's pid covers other systems and the moment before prctl.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

import torch

PR_SET_PDEATHSIG = 1
WATCHDOG_PERIOD_S = 0.5


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def exit_with_parent(parent_pid: int) -> None:
    """Make this process end as soon as process ``parent_pid`` (its parent) is gone.

    Linux sends the death signal when the parent *thread* that started this process exits: the
    executors start their workers from the thread that runs the pool, which outlives them.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="dtda-parent-watchdog", daemon=True).start()


def _watch(parent_pid: int) -> None:
    # A dead parent's children are re-parented (to init or a subreaper), so getppid() changes.
    while os.getppid() == parent_pid:
        time.sleep(WATCHDOG_PERIOD_S)
    os._exit(1)
