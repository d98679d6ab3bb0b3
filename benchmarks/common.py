"""Measurement helpers for the benchmarks: medians of wall time, peak resident memory of one call.

Peak memory is measured per process on Linux: the kernel's high-water mark of resident memory
(VmHWM) is reset through /proc/self/clear_refs just before the call, so ``peak_rss_delta`` is the
largest amount of memory the call made resident beyond what the process held before it (inputs
included in the baseline, so it counts the call's outputs, intermediates and workspaces). Run it
with fixed malloc thresholds (benchmarks/ops.py sets them) so that freed buffers go back to the OS
and an allocator cache from an earlier call cannot hide a peak.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_rss_delta(fn: Callable[[], object]) -> tuple[object, int]:
    """Run ``fn`` once; return its result and the peak RSS increase in bytes during the call."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    result = fn()
    return result, max(0, _status_kib("VmHWM") - before) * 1024


def median_time(fn: Callable[[], object], repeats: int, budget_s: float) -> tuple[float, int]:
    """Median wall time of up to ``repeats`` calls, stopping early once ``budget_s`` is spent."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (not times or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(times)
