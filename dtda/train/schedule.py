"""Learning-rate schedules: a small spec evaluated as a multiplier of the base rate.

Spec (``t`` is the 0-based step, ``T`` the number of steps):

- ``"constant"``: 1.
- ``"cosine"``: ½(1 + cos(π t / T)).
- ``"linear"``: 1 − t / T (linear decay towards 0).
- ``("step", step_size, gamma)``: gamma ** (t // step_size).
- ``("warmup", warmup_steps, then)``: (t + 1) / warmup_steps for t < warmup_steps, then the
  schedule ``then`` evaluated at (t − warmup_steps, T − warmup_steps).
"""

from __future__ import annotations

import math

NAMES = ("constant", "cosine", "linear")


def check_schedule(spec) -> object:
    """Validate a schedule spec; returns it in canonical form (tuples, not lists)."""
    if isinstance(spec, str):
        if spec not in NAMES:
            raise ValueError(f"schedule must be one of {NAMES}, ('step', size, gamma) or "
                             f"('warmup', steps, then), got {spec!r}")
        return spec
    if isinstance(spec, (tuple, list)) and spec:
        kind = spec[0]
        if kind == "step" and len(spec) == 3:
            size, gamma = spec[1], spec[2]
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"schedule ('step', step_size, gamma): step_size must be a "
                                 f"positive int, got {size!r}")
            if not isinstance(gamma, (int, float)) or not gamma > 0:
                raise ValueError(f"schedule ('step', step_size, gamma): gamma must be > 0, got {gamma!r}")
            return ("step", size, float(gamma))
        if kind == "warmup" and len(spec) == 3:
            steps = spec[1]
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"schedule ('warmup', warmup_steps, then): warmup_steps must be "
                                 f"a positive int, got {steps!r}")
            return ("warmup", steps, check_schedule(spec[2]))
    raise ValueError(f"schedule must be one of {NAMES}, ('step', step_size, gamma) or "
                     f"('warmup', warmup_steps, then), got {spec!r}")


def multiplier(spec, t: int, T: int) -> float:
    """The learning-rate multiplier of ``spec`` at step ``t`` of ``T``."""
    if spec == "constant":
        return 1.0
    if spec == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t / max(T, 1)))
    if spec == "linear":
        return 1.0 - t / max(T, 1)
    kind = spec[0]
    if kind == "step":
        return spec[2] ** (t // spec[1])
    warm = spec[1]
    if t < warm:
        return (t + 1) / warm
    return multiplier(spec[2], t - warm, max(T - warm, 1))
