"""Shared machinery of the op tests: which implementations to test and how to judge them.

Tolerance rule (STYLE.md A3): with ref64 the reference run on float64 copies of the inputs,
an implementation run in dtype d passes when

    max|impl − ref64| ≤ c · max|reference_d − ref64| + eps_d · max(1, max|ref64|)

with c = 3 (accumulation order differs between implementations) and eps_d a floor per dtype
(below), so no hand-tuned atol per test. Outputs are poisoned (NaN) before every run, so an
unwritten element fails, and surrounded by NaN guards checked after it, so a write past their
ends fails; inputs sit between NaN guards, so a read past their ends makes the result NaN.
"""

from __future__ import annotations

import os
from typing import Callable

import pytest
import torch

import dtda.ops
from dtda.ops import alloc, reference, registry

C_FACTOR = 3.0
EPS = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
TRITON_ON_CPU = os.environ.get("TRITON_INTERPRET") == "1"


def implementations(op: str, device: str = "cpu") -> list:
    """pytest params for every backend implementing ``op`` on ``device``; unusable ones skip
    with their reason (but a missing ``cpp`` under DTDA_REQUIRE_NATIVE=1 fails in conftest)."""
    params = []
    for name, backend in sorted(registry.backends().items()):
        if op not in backend.ops:
            continue
        reason = backend.unavailable() or backend.supports(torch.device(device), torch.float32)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        if name == "triton":
            marks.append(pytest.mark.triton)
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def half_implementations(op: str, device: str = "cpu") -> list:
    """pytest params for the backends that must take float16/bfloat16 inputs on ``device``
    (``torch`` and, on CPU, ``cpp``, which upcasts them to float32); unbuilt ones skip."""
    names = ["torch", "cpp"] if device == "cpu" else ["torch"]
    return [p for p in implementations(op, device) if p.id in names]


def run(op: str, backend: str, *args, **kwargs):
    """Run public op ``op`` forced onto ``backend`` with guarded inputs and poisoned outputs
    (:mod:`dtda.ops.alloc`); check it ran there."""
    args = [alloc.guarded(a) if isinstance(a, torch.Tensor) else a for a in args]
    kwargs = {k: alloc.guarded(a) if isinstance(a, torch.Tensor) and k != "out" else a  # out: by identity
              for k, a in kwargs.items()}
    with registry.use_backend(backend), alloc.poisoned():
        out = getattr(dtda.ops, op)(*args, **kwargs)
    assert registry.last_backend(op) == backend
    return out


def _to(x, dtype):
    return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def assert_close_to_reference(op: str, backend: str, args: tuple, dtype: torch.dtype,
                              ref_fn: Callable | None = None, fields: tuple | None = None) -> None:
    """Compare ``backend`` on ``args`` cast to ``dtype`` with the float64 reference."""
    ref_fn = ref_fn or (lambda *a: getattr(dtda.ops, op)(*a))
    with registry.use_backend("reference"):
        ref64 = ref_fn(*[_to(a, torch.float64) for a in args])
        ref_d = ref_fn(*[_to(a, dtype) for a in args])
    got = run(op, backend, *[_to(a, dtype) for a in args])
    pairs = list(zip(got, ref_d, ref64)) if isinstance(got, tuple) else [(got, ref_d, ref64)]
    for i, (g, rd, r64) in enumerate(pairs):
        name = fields[i] if fields else f"output {i}"
        assert g.shape == r64.shape, f"{op}/{backend}: {name} shape {tuple(g.shape)} != {tuple(r64.shape)}"
        assert g.dtype == reference.result_dtype(dtype), f"{op}/{backend}: {name} dtype {g.dtype}"
        g64, rd64 = g.double(), rd.double()
        bad = ~torch.isfinite(g64) & torch.isfinite(r64)
        assert not bad.any(), f"{op}/{backend}: {name} has {int(bad.sum())} non-finite elements (unwritten?)"
        scale = max(1.0, r64.abs().max().item()) if r64.numel() else 1.0
        bound = C_FACTOR * (rd64 - r64).abs().max().item() + EPS[dtype] * scale if r64.numel() else 0.0
        err = (g64 - r64).abs().max().item() if r64.numel() else 0.0
        assert err <= bound, f"{op}/{backend} {dtype}: {name} max error {err:.3e} > bound {bound:.3e}"


def dtypes_for(backend: str) -> list:
    """The dtypes a backend is tested in on this machine."""
    if backend == "triton":
        return [torch.float32]  # the interpreter's bf16 tl.dot is wrong in triton 3.9; fp16 in op files
    if backend == "cpp":
        return [torch.float32, torch.float64]
    return [torch.float32, torch.float64]


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout (a transposed copy viewed back)."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() >= 2 else t[::1]


TRITON_MAX_DIM = 8  # the Triton interpreter is slow: it only gets shapes this small


def skip_unless_tiny(backend: str, *dims: int) -> None:
    """Skip the case for ``triton`` unless every dimension is at most :data:`TRITON_MAX_DIM`."""
    if backend == "triton" and max(dims, default=0) > TRITON_MAX_DIM:
        pytest.skip(f"triton interpreter: only shapes with every dimension ≤ {TRITON_MAX_DIM}")


def check_all_dtypes(op: str, backend: str, shape: tuple, args: tuple) -> None:
    """The per-op matrix cell: ``backend`` on ``args`` (drawn for ``shape``) against the float64
    reference in every dtype the backend is tested in (triton only on tiny shapes)."""
    skip_unless_tiny(backend, *shape)
    for dtype in dtypes_for(backend):
        assert_close_to_reference(op, backend, args, dtype)


def native_dtype_rejected(kernel: str, nargs: int) -> None:
    """A native CPU kernel called with the float16 dtype code raises ValueError naming it."""
    from dtda import _native

    module = _native.load_cpu()
    if module is None:
        pytest.skip(_native.why_not("_C"))
    args = [0] * nargs
    args[-2] = _native.DTYPE_CODES[torch.float16]  # (..., dtype, num_threads)
    args[-1] = 1
    expected = f"{kernel}: the CPU kernel supports float32 and float64, got float16"
    with pytest.raises(ValueError, match=expected):
        getattr(module, kernel)(*args)

# opcheck subset for extra samples: schema and fake kernel only (the autograd and AOT checks
# compile the op and take seconds each; every test file runs them in full on one sample).
OPCHECK_QUICK = ("test_schema", "test_faketensor")
