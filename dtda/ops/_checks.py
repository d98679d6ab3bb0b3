"""Input validation shared by the public ops: clear errors before any computation.

Every message names the op, the argument, what was received and what was expected.
"""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _fmt(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def tensor(op: str, name: str, t, dims: tuple[int, ...]) -> Tensor:
    """Check that ``t`` is a floating tensor with one of ``dims`` dimensions."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{op}: {name} must be {want}, got shape {_fmt(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{op}: {name} must be float32, float64, float16 or bfloat16, got {t.dtype}")
    return t


def tokens(op: str, name: str, t) -> Tensor:
    """A ``[N, T, D]`` tensor, or ``[N, D]`` read as T = 1."""
    t = tensor(op, name, t, (2, 3))
    return t.unsqueeze(1) if t.dim() == 2 else t


def shape(op: str, name: str, t: Tensor, expected: tuple, names: str) -> None:
    """Check ``t.shape == expected`` (None entries are free); ``names`` labels the dimensions."""
    if len(t.shape) != len(expected) or any(e is not None and s != e for s, e in zip(t.shape, expected)):
        want = _fmt("?" if e is None else e for e in expected)
        raise ValueError(f"{op}: {name} has shape {_fmt(t.shape)}, expected {want} ({names})")


def same(op: str, tensors: dict[str, Tensor]) -> None:
    """All tensors share one device and one dtype."""
    items = list(tensors.items())
    name0, t0 = items[0]
    for name, t in items[1:]:
        if t.device != t0.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {name0} is on {t0.device}")
        if t.dtype != t0.dtype:
            raise ValueError(f"{op}: {name} has dtype {t.dtype} but {name0} has {t0.dtype}")


def out(op: str, o: Tensor | None, expected: tuple, like: Tensor, result_dtype: torch.dtype) -> None:
    """Check an accumulation target ``out``: shape, device and the op's result dtype."""
    if o is None:
        return
    if not isinstance(o, Tensor):
        raise TypeError(f"{op}: out must be a torch.Tensor or None, got {type(o).__name__}")
    shape(op, "out", o, expected, "the result's shape")
    if o.device != like.device or o.dtype != result_dtype:
        raise ValueError(f"{op}: out must be {result_dtype} on {like.device}, got {o.dtype} on {o.device}")
