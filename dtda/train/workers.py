"""What every seed task and worker process does, whichever executor runs it.

- :func:`torch_threads`: a seed task runs with a fixed number of torch threads, so its numbers
  do not depend on the executor (float sums are split differently over 1 and 2 threads).
- :func:`exit_with_parent`: a worker process ends when its driver ends, however the driver ends
  (``kill -9`` included): Linux delivers SIGKILL on the parent's death (``PR_SET_PDEATHSIG``), and
  a watchdog thread polling the parent's pid covers other systems and the moment before prctl.
- :func:`keep_freed_memory`: a worker keeps the memory it frees for its next allocations instead
  of handing it back to the kernel and page-faulting it in again.
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
# glibc's mallopt parameters (malloc.h) and the values keep_freed_memory sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest: blocks up to this size come from the heap
TRIM_THRESHOLD_BYTES = 1 << 30  # free heap top kept before any is returned to the kernel


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees instead of returning it to the kernel (glibc;
    True when set, False on other C libraries, where nothing changes).

    A reverse sweep frees and allocates the same tensors again every segment and every step
    (replayed states, R-tensors of a few hundred KB). By default glibc serves blocks above a
    moving threshold with fresh mappings and trims the heap's free top, so the next allocation
    page-faults every 4 KB page again: on the demo 64–127 faults per member and step, at
    3.6 µs a fault in the CI-like VM, ≈ 5 % of the sweep (docs/unrolling.md). With both thresholds
    raised, freed blocks up to 32 MB stay in the heap: the process's resident memory stays at
    its peak, which suits a worker that runs seed after seed of the same shapes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = _libc()
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return (bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
            and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)))


def exit_with_parent(parent_pid: int) -> None:
    """Make this process end as soon as process ``parent_pid`` (its parent) is gone.

    Linux sends the death signal when the parent *thread* that started this process exits: the
    executors start their workers from the thread that runs the pool, which outlives them.
    """
    if sys.platform.startswith("linux"):
        _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="dtda-parent-watchdog", daemon=True).start()


def _watch(parent_pid: int) -> None:
    # A dead parent's children are re-parented (to init or a subreaper), so getppid() changes.
    while os.getppid() == parent_pid:
        time.sleep(WATCHDOG_PERIOD_S)
    os._exit(1)
