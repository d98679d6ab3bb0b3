"""``python -m dtda info``: what is installed, what loaded, and which backend runs each op."""

from __future__ import annotations

import importlib.util
import os
import platform

import torch

import dtda
from dtda import _native
from dtda.ops import registry


def _triton_status() -> str:
    if importlib.util.find_spec("triton") is None:
        return "not installed"
    import triton

    reason = registry.backends()["triton"].unavailable()
    return f"{triton.__version__} ({'usable' if not reason else reason})"


def _group_rule() -> list[str]:
    from dtda import demo
    from dtda.train import lockstep

    seeds = demo.config()["train"]["seeds"]
    demo_params = 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10  # the demo's MLP 64-128-128-10
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    rule = (f"seeds/group execution.seeds_per_group = 0 picks min({lockstep.MAX_GROUP}, ceil(seeds / workers), "
            f"{lockstep.GROUP_PARAMS} / parameters, memory / 4 / (512 B x parameters))")
    here = (f"            here ({memory / 2**30:.0f} GiB): demo MLP ({demo_params} parameters), {seeds} seeds: "
            f"{lockstep.default_group_size(demo_params, seeds, 1)} (local), "
            f"{lockstep.default_group_size(demo_params, seeds, 2)} (2 workers)")
    return [rule, here]


def report() -> str:
    """A human-readable report of versions, native modules and per-op backend choices."""
    cpu = _native.load_cpu()
    cuda = _native.load_cuda()
    lines = [
        f"dtda        {dtda.__version__}",
        f"python      {platform.python_version()} ({platform.machine()})",
        f"torch       {torch.__version__} (cuda available: {torch.cuda.is_available()})",
        f"dtda._C     {'loaded, OpenMP ' + ('on' if cpu.openmp else 'off') + f', {cpu.max_threads()} threads' if cpu else 'missing: ' + _native.why_not('_C')}",
        f"dtda._C_cuda {'loaded, archs ' + cuda.archs if cuda else 'not loaded: ' + _native.why_not('_C_cuda')}",
        f"triton      {_triton_status()}",
        f"forced      {registry.forced() or 'none (automatic selection)'}",
        *_group_rule(),
        "",
        f"{'op':<16} {'cpu float32':<14} {'cuda float32':<14} available on cpu",
    ]
    for op in registry.OPS:
        row = [op]
        for device in ("cpu", "cuda"):
            try:
                row.append(registry.select(op, torch.device(device), torch.float32)[0])
            except RuntimeError:
                row.append("-")
        row.append(", ".join(registry.candidates(op, torch.device("cpu"), torch.float32)))
        lines.append(f"{row[0]:<16} {row[1]:<14} {row[2]:<14} {row[3]}")
    return "\n".join(lines)
