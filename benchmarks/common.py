"""Measurement helpers for the benchmarks: medians of wall time, peak resident memory of one call.

Peak memory is measured per process on Linux: the kernel's high-water mark of resident memory
(VmHWM) is reset through /proc/self/clear_refs just before the call, so ``peak_rss_delta`` is the
largest amount of memory the call made resident beyond what the process held before it (inputs
included in the baseline, so it counts the call's outputs, intermediates and workspaces). Run it
with fixed malloc thresholds (benchmarks/ops.py sets them) so that freed buffers go back to the OS
and an allocator cache from an earlier call cannot hide a peak.

:class:`Timeline` splits one long run into named stages the same way: wall time per stage and
each stage's peak RSS above the RSS at its start, plus the whole run's peak.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

# Fixed malloc thresholds for a measured child process: every block above 64 KiB is mmapped and
# returned to the OS when freed, so resident memory tracks live memory and one measured call's
# freed buffers cannot hide the next one's peak.
FIXED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def run_child(module: str, request: dict, failure: str) -> object:
    """Run ``python -m module --child <request as JSON>`` with :data:`FIXED_MALLOC_ENV` (its stderr
    passes through) and return the JSON on its last stdout line, or ``failure`` + why if it failed."""
    proc = subprocess.run([sys.executable, "-m", module, "--child", json.dumps(request)],
                          stdout=subprocess.PIPE, text=True, env={**os.environ, **FIXED_MALLOC_ENV})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return f"{failure} failed with exit code {proc.returncode} (its stderr is above)"
    return json.loads(lines[-1])


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS


def peak_rss_delta(fn: Callable[[], object]) -> tuple[object, int]:
    """Run ``fn`` once; return its result and the peak RSS increase in bytes during the call."""
    _reset_peak()
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


class Timeline:
    """Consecutive named stages of one run: ``mark(name)`` ends the current stage and starts
    ``name`` (a name may recur: its times add up, its peak is the largest); ``close()`` ends the
    last one. Per stage: wall seconds and the peak RSS above the RSS at the stage's start (bytes);
    ``peak`` is the run's peak RSS above the RSS at construction."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peaks: dict[str, int] = {}
        self.peak = 0
        _reset_peak()  # the process's earlier peak (setup, warm-up) is not the run's
        self._base = _status_kib("VmRSS")
        self._current: tuple[str, float, int] | None = None

    def mark(self, name: str | None) -> None:
        now = time.perf_counter()
        high = _status_kib("VmHWM")
        self.peak = max(self.peak, (high - self._base) * 1024)
        if self._current is not None:
            stage, start, rss = self._current
            self.seconds[stage] = self.seconds.get(stage, 0.0) + now - start
            self.peaks[stage] = max(self.peaks.get(stage, 0), (high - rss) * 1024)
        _reset_peak()
        self._current = None if name is None else (name, time.perf_counter(), _status_kib("VmRSS"))

    def close(self) -> None:
        self.mark(None)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())
