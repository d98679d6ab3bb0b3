"""dtda.ops: the compiled core's ops, one contract each, behind one dispatch point.

Shapes: N examples, T positions (tokens, conv positions; a 2-D ``[N, D]`` input means T = 1),
I layer inputs, O layer outputs, Q queries, K seeds, P features, D dimension.

=================  ======================================================================
op                 computes
=================  ======================================================================
kron_covariance    ``C = Σ_{n,t} mask_nt x_nt x_ntᵀ``                                  [D, D]
ghost_dot          ``S[n,q] = Σ_t g_ntᵀ M_q a_nt = ⟨G_n, M_q⟩``, G_n = Σ_t g_nt a_ntᵀ    [N, Q]
ghost_pairwise     ``S[q,n] = ⟨G_q, G_n⟩`` from factors on both sides                  [Q, N]
ekfac_eigvals      ``Λ = Σ_n (QSᵀ G_n QA)^∘2``                                         [O, I]
kron_apply         ``QS (scale ∘ (QSᵀ V_q QA)) QAᵀ``                                    [Q, O, I]
jl_project         ``X R / √k``, R regenerated from Philox counters (seed, row, col)   [N, k]
seed_moments       mean, var, cov(m, δ), exact variance increase, W2 over seeds         [N, Q] each
=================  ======================================================================

Each op is a ``torch.library`` custom op (``torch.ops.dtda.<op>``) with a fake kernel and a
backward; the implementation that runs is chosen by :mod:`dtda.ops.registry` (see
:func:`use_backend`, :func:`last_backend`). Half-precision inputs give float32 results.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dtda.ops import _checks as check
from dtda.ops import backends as _backends  # noqa: F401  (registers the implementations)
from dtda.ops import library as _library
from dtda.ops.reference import SeedMoments, result_dtype
from dtda.ops.registry import backends, candidates, last_backend, use_backend

__all__ = [
    "kron_covariance", "ghost_dot", "ghost_pairwise", "ekfac_eigvals", "kron_apply",
    "jl_project", "seed_moments", "SeedMoments", "use_backend", "last_backend", "backends",
    "candidates",
]


def _accumulate(out: Tensor | None, result: Tensor) -> Tensor:
    if out is None:
        return result
    return out.add_(result)


def kron_covariance(x: Tensor, mask: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """``Σ_{n,t} mask_nt x_nt x_ntᵀ`` for x [N, T, D] (or [N, D]), mask [N, T] (bool or float).

    Returns [D, D]; with ``out`` [D, D] the result is added into it and ``out`` is returned.
    """
    op = "kron_covariance"
    x = check.tokens(op, "x", x)
    N, T, D = x.shape
    if mask is not None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"{op}: mask must be a torch.Tensor or None, got {type(mask).__name__}")
        mask = mask.unsqueeze(1) if mask.dim() == 1 and T == 1 else mask
        check.shape(op, "mask", mask, (N, T), "N, T")
        if mask.device != x.device:
            raise ValueError(f"{op}: mask is on {mask.device} but x is on {x.device}")
        if not (mask.dtype == x.dtype or mask.dtype == torch.bool):
            raise ValueError(f"{op}: mask must be bool or {x.dtype} like x, got {mask.dtype}")
    check.out(op, out, (D, D), x, result_dtype(x.dtype))
    return _accumulate(out, _library.call("kron_covariance", x, mask))


def ghost_dot(a: Tensor, g: Tensor, M: Tensor) -> Tensor:
    """``S[n, q] = Σ_t g_ntᵀ M_q a_nt``: per-example gradient · M_q without forming G_n.

    a: [N, T, I] layer inputs; g: [N, T, O] output gradients; M: [Q, O, I]. Returns [N, Q].
    Differentiable in a, g and M.
    """
    op = "ghost_dot"
    a, g = check.tokens(op, "a", a), check.tokens(op, "g", g)
    M = check.tensor(op, "M", M, (3,))
    N, T, I = a.shape
    check.shape(op, "g", g, (N, T, None), "N, T, O with N, T from a")
    check.shape(op, "M", M, (None, g.shape[2], I), "Q, O, I with O from g, I from a")
    check.same(op, {"a": a, "g": g, "M": M})
    return _library.call("ghost_dot", a, g, M)


def ghost_pairwise(a_q: Tensor, g_q: Tensor, a: Tensor, g: Tensor) -> Tensor:
    """``S[q, n] = ⟨G_q, G_n⟩`` with G = Σ_t g_t a_tᵀ on both sides.

    a_q: [Q, S, I]; g_q: [Q, S, O]; a: [N, T, I]; g: [N, T, O]. Returns [Q, N].
    """
    op = "ghost_pairwise"
    a_q, g_q = check.tokens(op, "a_q", a_q), check.tokens(op, "g_q", g_q)
    a, g = check.tokens(op, "a", a), check.tokens(op, "g", g)
    N, T, I = a.shape
    check.shape(op, "g", g, (N, T, None), "N, T, O with N, T from a")
    check.shape(op, "a_q", a_q, (None, None, I), "Q, S, I with I from a")
    check.shape(op, "g_q", g_q, (a_q.shape[0], a_q.shape[1], g.shape[2]), "Q, S from a_q, O from g")
    check.same(op, {"a_q": a_q, "g_q": g_q, "a": a, "g": g})
    return _library.call("ghost_pairwise", a_q, g_q, a, g)


def ekfac_eigvals(a: Tensor, g: Tensor, QA: Tensor, QS: Tensor, out: Tensor | None = None) -> Tensor:
    """``Λ = Σ_n (QSᵀ G_n QA)^∘2`` with G_n = Σ_t g_nt a_ntᵀ (EK-FAC eigenvalue correction).

    a: [N, T, I]; g: [N, T, O]; QA: [I, I]; QS: [O, O]. Returns [O, I]; with ``out`` the
    result is added into it (to accumulate over batches) and ``out`` is returned.
    """
    op = "ekfac_eigvals"
    a, g = check.tokens(op, "a", a), check.tokens(op, "g", g)
    QA, QS = check.tensor(op, "QA", QA, (2,)), check.tensor(op, "QS", QS, (2,))
    N, T, I = a.shape
    O = g.shape[2]
    check.shape(op, "g", g, (N, T, None), "N, T, O with N, T from a")
    check.shape(op, "QA", QA, (I, I), "I, I with I from a")
    check.shape(op, "QS", QS, (O, O), "O, O with O from g")
    check.same(op, {"a": a, "g": g, "QA": QA, "QS": QS})
    check.out(op, out, (O, I), a, result_dtype(a.dtype))
    return _accumulate(out, _library.call("ekfac_eigvals", a, g, QA, QS))


def kron_apply(V: Tensor, QA: Tensor, QS: Tensor, scale: Tensor) -> Tensor:
    """``out_q = QS (scale ∘ (QSᵀ V_q QA)) QAᵀ``; scale = 1/(Λ+λ) gives the EK-FAC inverse.

    V: [Q, O, I] (or [O, I], read as Q = 1 and returned as [O, I]); QA: [I, I]; QS: [O, O];
    scale: [O, I]. Returns [Q, O, I]. Differentiable in V, scale, QA and QS.
    """
    op = "kron_apply"
    V = check.tensor(op, "V", V, (2, 3))
    squeeze = V.dim() == 2
    V3 = V.unsqueeze(0) if squeeze else V
    QA, QS = check.tensor(op, "QA", QA, (2,)), check.tensor(op, "QS", QS, (2,))
    scale = check.tensor(op, "scale", scale, (2,))
    _, O, I = V3.shape
    check.shape(op, "QA", QA, (I, I), "I, I with I from V")
    check.shape(op, "QS", QS, (O, O), "O, O with O from V")
    check.shape(op, "scale", scale, (O, I), "O, I from V")
    check.same(op, {"V": V3, "QA": QA, "QS": QS, "scale": scale})
    result = _library.call("kron_apply", V3, QA, QS, scale)
    return result.squeeze(0) if squeeze else result


def jl_project(x: Tensor, k: int, seed: int, kind: str = "rademacher") -> Tensor:
    """``Y = X R / √k`` with R [P, k] regenerated from Philox counters (seed, row, column).

    x: [N, P]. Returns [N, k]. The entries of R are bit-identical across implementations
    (see :func:`dtda.ops.reference.jl_matrix` for the exact stream). ``kind`` is
    "rademacher" (±1) or "gaussian" (N(0, 1) by Box–Muller).
    """
    op = "jl_project"
    x = check.tensor(op, "x", x, (2,))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{op}: k must be a positive int, got {k!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"{op}: seed must be an int in [0, 2**63), got {seed!r}")
    if kind not in ("rademacher", "gaussian"):
        raise ValueError(f"{op}: kind must be 'rademacher' or 'gaussian', got {kind!r}")
    return _library.call("jl_project", x, k, seed, kind)


def seed_moments(m: Tensor, delta: Tensor) -> SeedMoments:
    """Per (n, q) statistics over K ≥ 2 seeds of measurements m and removal effects δ.

    m: [K, Q]; delta: [K, N, Q]. Returns :class:`SeedMoments` with fields mean, var, cov,
    var_increase (= var(m+δ) − var(m), exact) and w2 (sorted-sample Wasserstein-2), each [N, Q].
    """
    op = "seed_moments"
    m = check.tensor(op, "m", m, (2,))
    delta = check.tensor(op, "delta", delta, (3,))
    K, Q = m.shape
    if K < 2:
        raise ValueError(f"{op}: m must hold at least 2 seeds along dim 0, got shape [{K}, {Q}]")
    check.shape(op, "delta", delta, (K, None, Q), "K, N, Q with K, Q from m")
    check.same(op, {"m": m, "delta": delta})
    return SeedMoments(*_library.call("seed_moments", m, delta))

