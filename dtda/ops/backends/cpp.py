"""The ``cpp`` backend: adapters from tensors to the torch-free kernels of ``dtda._C``.

Each adapter makes its inputs contiguous, allocates the output with torch, poisons nothing
(the kernels write every element) and passes pointers, sizes, the dtype code and torch's
thread count to the native kernel.

The kernels compute in float32 and float64. Half-precision inputs (float16, bfloat16) are upcast
to float32, their result dtype, and run by the float32 kernel: the ``torch`` backend upcasts the
same way, and with the C++ kernel behind the copy half inputs run 1.4–3.4× faster than there
(kron_covariance, ghost_dot, jl_project, measured on the 2-core machine under load), so automatic
selection on CPU picks ``cpp`` for every dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dtda import _native
from dtda.ops import alloc, reference
from dtda.ops.registry import ALL_FLOATS, Backend, add_backend, register


def _unavailable() -> str:
    return "" if _native.load_cpu() is not None else _native.why_not("_C")


BACKEND = add_backend(Backend(
    name="cpp", priority=20, devices=frozenset({"cpu"}),
    dtypes=ALL_FLOATS, unavailable=_unavailable))


_MAX_SIZE = 2**31 - 1  # the kernels' OpenBLAS takes 32-bit sizes (csrc/cpu/blas.h check_sizes)


def _too_big(name: str, value: int) -> str:
    return f"{name} = {value} exceeds 2^31 - 1, the largest size its 32-bit OpenBLAS takes" if value > _MAX_SIZE else ""


def _fits_32_bits(*args) -> str:
    """'' when every extent of every tensor argument, and every row length (the product of all
    but the first extent: a leading stride), fits the kernels' 32-bit BLAS sizes; else why not."""
    for i, t in enumerate(a for a in args if isinstance(a, Tensor)):
        sizes = [(f"extent {d} of tensor {i}", s) for d, s in enumerate(t.shape)]
        sizes.append((f"the row length of tensor {i}", math.prod(t.shape[1:])))
        why = next((w for w in (_too_big(name, value) for name, value in sizes) if w), "")
        if why:
            return why
    return ""


def _register(op: str, accepts=_fits_32_bits):
    """Register a ``cpp`` adapter for ``op`` under the 32-bit size limit."""
    return register(op, "cpp", accepts=accepts)


def _inputs(*tensors: Tensor) -> list[Tensor]:
    """Contiguous, in the kernel's dtype (float16/bfloat16 upcast to float32, the result dtype)."""
    return [t.to(reference.result_dtype(t.dtype)).contiguous() for t in tensors]


# ---- kron_covariance / ghost_dot / ghost_pairwise / ekfac_eigvals / kron_apply -------------------

def _call(kernel: str, *args) -> None:
    """Run ``dtda._C.<kernel>(*args, dtype code, threads)``; tensors are passed as pointers."""
    tensors = [a for a in args if isinstance(a, Tensor)]
    ptrs = [a.data_ptr() if isinstance(a, Tensor) else a for a in args]
    getattr(_native.load_cpu(), kernel)(*ptrs, _native.DTYPE_CODES[tensors[0].dtype], torch.get_num_threads())


_MASK_NONE, _MASK_BOOL, _MASK_WEIGHT = 0, 1, 2  # mask kinds of csrc/cpu/kron_covariance_cpu.cpp


@_register("kron_covariance")
def kron_covariance(x: Tensor, mask: Tensor | None) -> Tensor:
    """``Σ_{n,t} mask_nt x_nt x_ntᵀ`` for x [N, T, D], mask [N, T] bool/float or None. Returns [D, D]."""
    (x,) = _inputs(x)
    N, T, D = x.shape
    out = alloc.empty((D, D), x.dtype, x.device)
    if mask is None:
        kind, mask_ptr = _MASK_NONE, 0
    else:
        mask = (mask if mask.dtype == torch.bool else mask.to(x.dtype)).contiguous()
        kind, mask_ptr = (_MASK_BOOL if mask.dtype == torch.bool else _MASK_WEIGHT), mask.data_ptr()
    _native.load_cpu().kron_covariance(x.data_ptr(), kind, mask_ptr, out.data_ptr(), N * T, D,
                                       _native.DTYPE_CODES[x.dtype], torch.get_num_threads())
    return out


@_register("ghost_dot")
def ghost_dot(a: Tensor, g: Tensor, M: Tensor) -> Tensor:
    """``S[n, q] = Σ_t g_ntᵀ M_q a_nt`` for a [N, T, I], g [N, T, O], M [Q, O, I]. Returns [N, Q]."""
    a, g, M = _inputs(a, g, M)
    (N, T, I), Q, O = a.shape, M.shape[0], g.shape[2]
    out = alloc.empty((N, Q), a.dtype, a.device)
    _call("ghost_dot", a, g, M, out, N, T, I, O, Q)
    return out


@_register("ghost_pairwise")
def ghost_pairwise(a_q: Tensor, g_q: Tensor, a: Tensor, g: Tensor) -> Tensor:
    """``S[q, n] = ⟨G_q, G_n⟩`` for a_q [Q, S, I], g_q [Q, S, O], a [N, T, I], g [N, T, O].

    Returns [Q, N]."""
    a_q, g_q, a, g = _inputs(a_q, g_q, a, g)
    (Q, S, I), (N, T, O) = a_q.shape, g.shape
    out = alloc.empty((Q, N), a.dtype, a.device)
    _call("ghost_pairwise", a_q, g_q, a, g, out, Q, S, N, T, I, O)
    return out


@_register("ekfac_eigvals")
def ekfac_eigvals(a: Tensor, g: Tensor, QA: Tensor, QS: Tensor) -> Tensor:
    """``Λ = Σ_n (QSᵀ G_n QA)^∘2`` for a [N, T, I], g [N, T, O], QA [I, I], QS [O, O].

    Returns [O, I]."""
    a, g, QA, QS = _inputs(a, g, QA, QS)
    (N, T, I), O = a.shape, g.shape[2]
    out = alloc.empty((O, I), a.dtype, a.device)
    _call("ekfac_eigvals", a, g, QA, QS, out, N, T, I, O)
    return out


@_register("kron_apply")
def kron_apply(V: Tensor, QA: Tensor, QS: Tensor, scale: Tensor) -> Tensor:
    """``QS (scale ∘ (QSᵀ V_q QA)) QAᵀ`` for V [Q, O, I], QA [I, I], QS [O, O], scale [O, I]."""
    V, QA, QS, scale = _inputs(V, QA, QS, scale)
    Q, O, I = V.shape
    out = alloc.empty((Q, O, I), V.dtype, V.device)
    _call("kron_apply", V, QA, QS, scale, out, Q, O, I)
    return out


# ---- jl_project / seed_moments -------------------------------------------------------------------

@_register("jl_project", accepts=lambda x, k, seed, kind: _fits_32_bits(x) or _too_big("k", k))
def jl_project(x: Tensor, k: int, seed: int, kind: str) -> Tensor:
    """``X R / √k`` for x [N, P]: R tiles regenerated from Philox inside the kernel. Returns [N, k]."""
    (x,) = _inputs(x)
    N, P = x.shape
    y = alloc.empty((N, k), x.dtype, x.device)
    _native.load_cpu().jl_project(x.data_ptr(), y.data_ptr(), N, P, k, seed, kind,
                                  _native.DTYPE_CODES[x.dtype], torch.get_num_threads())
    return y


@_register("seed_moments")
def seed_moments(m: Tensor, delta: Tensor) -> reference.SeedMoments:
    """Mean, var, cov, var_increase, w2 [N, Q] of m [K, Q], delta [K, N, Q] in one pass over delta."""
    m, delta = _inputs(m, delta)
    K, N, Q = delta.shape
    out = reference.SeedMoments(*(alloc.empty((N, Q), delta.dtype, delta.device) for _ in range(5)))
    _native.load_cpu().seed_moments(m.data_ptr(), delta.data_ptr(), *(o.data_ptr() for o in out), K, N, Q,
                                    _native.DTYPE_CODES[delta.dtype], torch.get_num_threads())
    return out
