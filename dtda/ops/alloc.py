"""Output allocation for every backend adapter.

Adapters allocate results here instead of calling ``torch.empty`` directly, so tests can
poison every fresh output and catch two kernel bugs that otherwise pass by luck:

- an element the kernel forgets to write stays NaN and fails the comparison;
- a write past either end of the output lands in a NaN guard zone around it (the output is a
  view into a larger buffer), which :func:`poisoned` checks when its block ends.

:func:`guarded` gives inputs the same NaN surroundings, so a read past their end turns the
result into NaN (the Triton interpreter and the CPU do not fault on such reads).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

GUARD = 1024  # elements of NaN before and after each poisoned output or guarded input

_poison = False
_watched: list[tuple[torch.Tensor, int]] = []  # (whole buffer, output numel) of the open block


def _with_guards(shape: tuple[int, ...], stride: tuple[int, ...], dtype: torch.dtype,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(NaN buffer, view of ``shape``/``stride`` starting GUARD elements into it)."""
    span = 1 + sum((n - 1) * s for n, s in zip(shape, stride)) if all(shape) else 0
    buffer = torch.full((span + 2 * GUARD,), float("nan"), dtype=dtype, device=device)
    return buffer, buffer.as_strided(shape, stride, GUARD)


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised output (NaN-filled and NaN-guarded while :func:`poisoned` is active)."""
    if not (_poison and dtype.is_floating_point):
        return torch.empty(shape, dtype=dtype, device=device)
    shape = tuple(shape)
    buffer, out = _with_guards(shape, torch.empty(shape, device="meta").stride(), dtype, device)
    _watched.append((buffer, out.numel()))
    return out


def guarded(x: torch.Tensor) -> torch.Tensor:
    """A copy of floating-point ``x`` (same strides, non-overlapping layouts) between NaN guards."""
    if not x.is_floating_point() or any(s < 0 for s in x.stride()):
        return x
    _, copy = _with_guards(tuple(x.shape), x.stride(), x.dtype, x.device)
    return copy.copy_(x)


@contextlib.contextmanager
def poisoned(enabled: bool = True) -> Iterator[None]:
    """Poison every output allocated inside the block (NaN inside, NaN guards around it); on
    leaving the block, raise AssertionError if a kernel wrote into a guard."""
    global _poison, _watched
    previous, outer = _poison, _watched
    _poison, _watched = enabled, []
    try:
        yield
        for buffer, numel in _watched:
            guards = torch.cat([buffer[:GUARD], buffer[buffer.numel() - GUARD:]])
            written = int((~guards.isnan()).sum())
            if written:
                raise AssertionError(f"a kernel wrote {written} element(s) outside its output of "
                                     f"{numel} elements (into the NaN guard zone)")
    finally:
        _poison, _watched = previous, outer
