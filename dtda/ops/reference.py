"""Readable pure-PyTorch references of every dtda op: the test oracle and the catch-all kernel.

Each function states its formula and shapes; all run in float64 when given float64 inputs and
favour the obvious formulation over the fast one (the fast pure-PyTorch formulations live in
``dtda/ops/backends/torch_fast.py``). Shapes: N examples, T positions, I layer inputs, O layer
outputs, Q queries, K seeds, P features, D dimension. Inputs arrive validated and normalised to
their 3-D forms by :mod:`dtda.ops` (a 2-D ``[N, D]`` means T = 1). Half-precision inputs are
computed in float32 (fp32 accumulation): the result dtype is ``result_dtype(input.dtype)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


def result_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half and bfloat16 inputs give float32 outputs; float32/float64 keep their dtype."""
    return torch.promote_types(dtype, torch.float32)


def _acc(t: Tensor) -> Tensor:
    return t.to(result_dtype(t.dtype))


def unmasked(x: Tensor, mask: Tensor | None) -> Tensor:
    """x [N, T, D] with every position whose mask [N, T] is False or 0 set to 0.

    The mask contract of :func:`kron_covariance`: masked positions are not read, so padding
    garbage there (NaN, Inf) never reaches a result or a gradient. A non-zero weight, NaN
    included, is read as usual (NaN then propagates).
    """
    return x if mask is None else x.masked_fill((mask == 0).unsqueeze(-1), 0)


def kron_covariance(x: Tensor, mask: Tensor | None) -> Tensor:
    """``C = Σ_{n,t} mask_nt x_nt x_ntᵀ`` (the K-FAC factors A and S, uncentred, unnormalised).

    x: [N, T, D]; mask: [N, T] (bool or float weights) or None (all ones). Returns [D, D].
    Positions with mask False or 0 are not read (:func:`unmasked`).
    """
    x = unmasked(_acc(x), mask)
    w = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
    return torch.einsum("nt,ntd,nte->de", w, x, x)


def per_example_gradients(a: Tensor, g: Tensor) -> Tensor:
    """``G_n = Σ_t g_nt a_ntᵀ``, the per-example gradient of a Linear layer's weight.

    a: [N, T, I] layer inputs; g: [N, T, O] output gradients. Returns [N, O, I].
    """
    return torch.einsum("nto,nti->noi", _acc(g), _acc(a))


def ghost_dot(a: Tensor, g: Tensor, M: Tensor) -> Tensor:
    """``S[n, q] = ⟨G_n, M_q⟩_F = Σ_t g_ntᵀ M_q a_nt``.

    a: [N, T, I]; g: [N, T, O]; M: [Q, O, I]. Returns [N, Q].
    """
    return torch.einsum("noi,qoi->nq", per_example_gradients(a, g), _acc(M))


def ghost_pairwise(a_q: Tensor, g_q: Tensor, a: Tensor, g: Tensor) -> Tensor:
    """``S[q, n] = ⟨G_q, G_n⟩_F = Σ_{s,t} (g_qsᵀ g_nt)(a_qsᵀ a_nt)``.

    a_q: [Q, S, I]; g_q: [Q, S, O]; a: [N, T, I]; g: [N, T, O]. Returns [Q, N].
    """
    return torch.einsum("qoi,noi->qn", per_example_gradients(a_q, g_q), per_example_gradients(a, g))


def ekfac_eigvals(a: Tensor, g: Tensor, QA: Tensor, QS: Tensor) -> Tensor:
    """``Λ = Σ_n (QSᵀ G_n QA)^∘2``: the EK-FAC eigenvalue correction, unnormalised.

    a: [N, T, I]; g: [N, T, O]; QA: [I, I] and QS: [O, O] eigenvector matrices (columns).
    Returns [O, I].
    """
    rotated = _acc(QS).T @ per_example_gradients(a, g) @ _acc(QA)
    return rotated.square().sum(0)


def kron_apply(V: Tensor, QA: Tensor, QS: Tensor, scale: Tensor) -> Tensor:
    """``out_q = QS (scale ∘ (QSᵀ V_q QA)) QAᵀ``.

    With scale = 1/(Λ+λ) this is the EK-FAC inverse-curvature product, with scale = Λ the
    curvature product, with SOURCE's matrix functions of Λ the segment maps.
    V: [Q, O, I]; QA: [I, I]; QS: [O, O]; scale: [O, I]. Returns [Q, O, I].
    """
    QA, QS = _acc(QA), _acc(QS)
    return QS @ (_acc(scale) * (QS.T @ _acc(V) @ QA)) @ QA.T


# ---- Counter-based randomness ------------------------------------------------------------------
# Philox4x32-10 (Salmon et al. 2011). The projection matrix R [P, k] is a pure function of
# (seed, row p, column j), so every implementation regenerates the same entries tile by tile:
#   key     = (seed mod 2^32, seed div 2^32 mod 2^32)
#   Rademacher: counter = (p mod 2^32, p div 2^32, j div 128, 0); of the 128 output bits, bit
#               (j mod 32) of word ((j mod 128) div 32) is 1 for +1 and 0 for -1.
#   Gaussian:   counter = (p mod 2^32, p div 2^32, j div 2, 1); words (2(j mod 2), 2(j mod 2)+1)
#               give u1 = (w0 + 1)/2^32 ∈ (0, 1], u2 = w1/2^32 and R = √(−2 ln u1) cos(2π u2).
# The projection is Y = X R / √k.

_PHILOX_M0, _PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
_PHILOX_W0, _PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = 0xFFFFFFFF


def philox4x32(counter: tuple[Tensor, Tensor, Tensor, Tensor], key: tuple[int, int]) -> list[Tensor]:
    """Philox4x32-10 on int64 tensors holding 32-bit words; returns the four output words.

    The 32x32-bit products fit int64 once wrapped: (x * y) mod 2^64 is the exact product, so
    its high word is ``(x * y >> 32) & 0xFFFFFFFF`` even when the int64 value is negative.
    """
    c0, c1, c2, c3 = (c.to(torch.int64) & _MASK32 for c in counter)
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for _ in range(10):
        p0, p1 = _PHILOX_M0 * c0, _PHILOX_M1 * c2
        hi0, lo0 = (p0 >> 32) & _MASK32, p0 & _MASK32
        hi1, lo1 = (p1 >> 32) & _MASK32, p1 & _MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _PHILOX_W0) & _MASK32, (k1 + _PHILOX_W1) & _MASK32
    return [c0, c1, c2, c3]


def jl_matrix(P: int, k: int, seed: int, kind: str, dtype: torch.dtype = torch.float64,
              device: torch.device | str = "cpu") -> Tensor:
    """The unscaled random matrix R [P, k] of :func:`jl_project` (entries ±1 or N(0, 1))."""
    p = torch.arange(P, dtype=torch.int64, device=device).view(P, 1).expand(P, k)
    j = torch.arange(k, dtype=torch.int64, device=device).view(1, k).expand(P, k)
    key = (seed & _MASK32, (seed >> 32) & _MASK32)
    p_lo, p_hi = p & _MASK32, p >> 32
    if kind == "rademacher":
        words = philox4x32((p_lo, p_hi, j >> 7, torch.zeros_like(j)), key)
        which = (j & 127) >> 5
        word = torch.where(which == 0, words[0], torch.where(which == 1, words[1],
                           torch.where(which == 2, words[2], words[3])))
        bit = (word >> (j & 31)) & 1
        return (2 * bit - 1).to(dtype)
    if kind == "gaussian":
        words = philox4x32((p_lo, p_hi, j >> 1, torch.ones_like(j)), key)
        first = (j & 1) == 0
        w0 = torch.where(first, words[0], words[2]).to(torch.float64)
        w1 = torch.where(first, words[1], words[3]).to(torch.float64)
        u1, u2 = (w0 + 1.0) * 2.0**-32, w1 * 2.0**-32
        return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(dtype)
    raise ValueError(f"jl_project: kind must be 'rademacher' or 'gaussian', got {kind!r}")


def jl_project(x: Tensor, k: int, seed: int, kind: str) -> Tensor:
    """``Y = X R / √k``, a Johnson–Lindenstrauss projection with R from :func:`jl_matrix`.

    x: [N, P]. Returns [N, k]. E⟨Y_n, Y_m⟩ = ⟨x_n, x_m⟩.
    """
    x = _acc(x)
    if x.numel() == 0:  # nothing to project: no R (P·k entries, however large k is)
        return x.new_zeros((x.shape[0], k))
    R = jl_matrix(x.shape[1], k, seed, kind, dtype=x.dtype, device=x.device)
    return (x @ R) / math.sqrt(k)


# ---- Seed statistics ---------------------------------------------------------------------------

class SeedMoments(NamedTuple):
    """Per (example n, measurement q) statistics over K seeds, all [N, Q] (ddof = 1).

    mean: mean_s δ_s; var: var_s δ_s; cov: cov_s(m_s, δ_s);
    var_increase: var_s(m_s + δ_s) − var_s(m_s) = 2 cov + var (exact);
    w2: Wasserstein-2 between the empirical samples {m_s} and {m_s + δ_s}, from sorted samples.
    """

    mean: Tensor
    var: Tensor
    cov: Tensor
    var_increase: Tensor
    w2: Tensor


def seed_moments(m: Tensor, delta: Tensor) -> SeedMoments:
    """Seed moments of removal effects. m: [K, Q] measurements; delta: [K, N, Q] effects."""
    m, delta = _acc(m), _acc(delta)
    K = m.shape[0]
    mean = delta.mean(0)
    dc = delta - mean
    mc = (m - m.mean(0)).unsqueeze(1)
    var = dc.square().sum(0) / (K - 1)
    cov = (mc * dc).sum(0) / (K - 1)
    after = m.unsqueeze(1) + delta
    after_c = after - after.mean(0)
    var_increase = (after_c.square().sum(0) - mc.square().sum(0)) / (K - 1)
    w2 = (after.sort(0).values - m.sort(0).values.unsqueeze(1)).square().mean(0).sqrt()
    return SeedMoments(mean, var, cov, var_increase, w2)
