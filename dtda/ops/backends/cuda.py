"""The ``cuda`` backend: adapters from CUDA tensors to the kernels of ``dtda._C_cuda``.

Adapters pass pointers, sizes, dtype codes, the device index and
``torch.cuda.current_stream().cuda_stream``; outputs and workspaces are allocated by torch (its
caching allocator). Each kernel plans its own work (contraction order, chunks of examples,
split reductions) and says how much workspace that plan needs (``<op>_workspace``). All dtypes
run: float16/bfloat16 inputs are read as float32 and accumulate in float32, float32 and float64
accumulate in their own precision. Limit: seed_moments sorts at most ``SEED_MOMENTS_MAX_K``
(256) seeds per thread; above it automatic selection moves on to the next backend.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from dtda import _native
from dtda.ops import alloc, reference
from dtda.ops.reference import result_dtype
from dtda.ops.registry import ALL_FLOATS, Backend, add_backend, register


def _unavailable() -> str:
    return "" if _native.load_cuda() is not None else _native.why_not("_C_cuda")


BACKEND = add_backend(Backend(
    name="cuda", priority=40, devices=frozenset({"cuda"}),
    dtypes=ALL_FLOATS, unavailable=_unavailable))


# ---- adapters ----------------------------------------------------------------------------------
# Each adapter makes its inputs contiguous, allocates the result (and the workspace the kernel's
# plan asks for) with torch on the input's device, and launches on torch's current stream.

def _launch(like: Tensor) -> tuple[ModuleType, int, int, int]:
    """The module, dtype code, device index and current stream handle for kernels on ``like``."""
    module = _native.load_cuda()
    if module is None:  # the registry checks availability first; this guards direct calls
        raise RuntimeError(f"dtda._C_cuda is unavailable: {_native.why_not('_C_cuda')}")
    device = like.device.index if like.device.index is not None else torch.cuda.current_device()
    return module, _native.DTYPE_CODES[like.dtype], device, torch.cuda.current_stream(like.device).cuda_stream


def _workspace(elements: int, like: Tensor) -> Tensor:
    """A workspace of ``elements`` result-dtype elements (poisoned in tests like any output)."""
    return alloc.empty((elements,), result_dtype(like.dtype), like.device)


@register("kron_covariance", "cuda")
def kron_covariance(x: Tensor, mask: Tensor | None) -> Tensor:
    x = x.contiguous()
    N, T, D = x.shape
    weight = None if mask is None else mask.to(result_dtype(x.dtype)).contiguous()
    out = alloc.empty((D, D), result_dtype(x.dtype), x.device)
    with torch.cuda.device(x.device):
        C, code, device, stream = _launch(x)
        ws = _workspace(C.kron_covariance_workspace(N, T, D, code, device), x)
        C.kron_covariance(x.data_ptr(), 0 if weight is None else weight.data_ptr(), out.data_ptr(),
                          ws.data_ptr(), ws.numel(), N, T, D, code, device, stream)
    return out


@register("ghost_dot", "cuda")
def ghost_dot(a: Tensor, g: Tensor, M: Tensor) -> Tensor:
    a, g, M = a.contiguous(), g.contiguous(), M.contiguous()
    (N, T, I), O, Q = a.shape, g.shape[2], M.shape[0]
    out = alloc.empty((N, Q), result_dtype(a.dtype), a.device)
    with torch.cuda.device(a.device):
        C, code, device, stream = _launch(a)
        ws = _workspace(C.ghost_dot_workspace(N, T, I, O, Q, code, device), a)
        C.ghost_dot(a.data_ptr(), g.data_ptr(), M.data_ptr(), out.data_ptr(), ws.data_ptr(), ws.numel(),
                    N, T, I, O, Q, code, device, stream)
    return out


@register("ghost_pairwise", "cuda")
def ghost_pairwise(a_q: Tensor, g_q: Tensor, a: Tensor, g: Tensor) -> Tensor:
    a_q, g_q, a, g = a_q.contiguous(), g_q.contiguous(), a.contiguous(), g.contiguous()
    (Q, S, I), (N, T, O) = a_q.shape, g.shape
    out = alloc.empty((Q, N), result_dtype(a.dtype), a.device)
    with torch.cuda.device(a.device):
        C, code, device, stream = _launch(a)
        ws = _workspace(C.ghost_pairwise_workspace(Q, S, N, T, I, O, code, device), a)
        C.ghost_pairwise(a_q.data_ptr(), g_q.data_ptr(), a.data_ptr(), g.data_ptr(), out.data_ptr(),
                         ws.data_ptr(), ws.numel(), Q, S, N, T, I, O, code, device, stream)
    return out


@register("ekfac_eigvals", "cuda")
def ekfac_eigvals(a: Tensor, g: Tensor, QA: Tensor, QS: Tensor) -> Tensor:
    a, g, QA, QS = a.contiguous(), g.contiguous(), QA.contiguous(), QS.contiguous()
    (N, T, I), O = a.shape, g.shape[2]
    out = alloc.empty((O, I), result_dtype(a.dtype), a.device)
    with torch.cuda.device(a.device):
        C, code, device, stream = _launch(a)
        ws = _workspace(C.ekfac_eigvals_workspace(N, T, I, O, code, device), a)
        C.ekfac_eigvals(a.data_ptr(), g.data_ptr(), QA.data_ptr(), QS.data_ptr(), out.data_ptr(),
                        ws.data_ptr(), ws.numel(), N, T, I, O, code, device, stream)
    return out


@register("kron_apply", "cuda")
def kron_apply(V: Tensor, QA: Tensor, QS: Tensor, scale: Tensor) -> Tensor:
    V, QA, QS = V.contiguous(), QA.contiguous(), QS.contiguous()
    scale = scale.to(result_dtype(V.dtype)).contiguous()  # the epilogue reads result-dtype scales
    Q, O, I = V.shape
    out = alloc.empty((Q, O, I), result_dtype(V.dtype), V.device)
    with torch.cuda.device(V.device):
        C, code, device, stream = _launch(V)
        ws = _workspace(Q * O * I, V)
        C.kron_apply(V.data_ptr(), QA.data_ptr(), QS.data_ptr(), scale.data_ptr(), out.data_ptr(),
                     ws.data_ptr(), ws.numel(), Q, O, I, code, device, stream)
    return out


@register("jl_project", "cuda")
def jl_project(x: Tensor, k: int, seed: int, kind: str) -> Tensor:
    x = x.contiguous()
    N, P = x.shape
    out = alloc.empty((N, k), result_dtype(x.dtype), x.device)
    with torch.cuda.device(x.device):
        C, code, device, stream = _launch(x)
        kind_code = C.JL_RADEMACHER if kind == "rademacher" else C.JL_GAUSSIAN
        ws = _workspace(C.jl_project_workspace(N, P, k, code, device), x)
        C.jl_project(x.data_ptr(), out.data_ptr(), ws.data_ptr(), ws.numel(), N, P, k, seed, kind_code,
                     code, device, stream)
    return out


def _seed_moments_fits(m: Tensor, delta: Tensor) -> str:
    limit = _native.load_cuda().SEED_MOMENTS_MAX_K
    return "" if m.shape[0] <= limit else f"it sorts at most {limit} seeds per thread, got K = {m.shape[0]}"


@register("seed_moments", "cuda", accepts=_seed_moments_fits)
def seed_moments(m: Tensor, delta: Tensor) -> reference.SeedMoments:
    m, delta = m.contiguous(), delta.contiguous()
    K, N, Q = delta.shape
    with torch.cuda.device(m.device):
        C, code, device, stream = _launch(m)
        outs = [alloc.empty((N, Q), result_dtype(m.dtype), m.device) for _ in reference.SeedMoments._fields]
        ws = _workspace(K * Q, m)
        C.seed_moments(m.data_ptr(), delta.data_ptr(), *(o.data_ptr() for o in outs), ws.data_ptr(),
                       ws.numel(), K, N, Q, code, device, stream)
    return reference.SeedMoments(*outs)
