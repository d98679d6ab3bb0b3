"""Output allocation for every backend adapter.

Adapters allocate results here instead of calling ``torch.empty`` directly, so tests can
poison every fresh output (NaN for floats) and an element a kernel forgets to write fails the
comparison instead of passing by luck.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

_poison = False


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised output (NaN-filled while :func:`poisoned` is active)."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if _poison:
        out.fill_(float("nan"))
    return out


@contextlib.contextmanager
def poisoned(enabled: bool = True) -> Iterator[None]:
    """Fill every output allocated inside the block with NaN before the kernel runs."""
    global _poison
    previous, _poison = _poison, enabled
    try:
        yield
    finally:
        _poison = previous
