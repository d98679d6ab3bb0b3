"""EK-FAC eigenvalue correction ``Λ = Σ_n (QSᵀ G_n QA)^∘2`` with G_n = Σ_t g_nt a_ntᵀ.

The per-token factors are rotated first, ``ã_nt = QAᵀ a_nt`` and ``g̃_nt = QSᵀ g_nt`` (two
products of :mod:`dtda.kernels.matmul`, float32), so ``QSᵀ G_n QA = Σ_t g̃_nt ã_ntᵀ``:

* T = 1: the rank-1 identity ``Λ = Σ_n (g̃_n)^∘2 (ã_n^∘2)ᵀ``, one product with squaring prologue;
* T > 1: per [O, I] output tile, each rotated G̃_n tile is formed through tl.dot over tokens,
  squared and accumulated; the examples are split into partial sums summed afterwards.

Examples are processed in chunks so the rotated factors stay below ``CHUNK_ELEMENTS``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dtda.kernels import tiles
from dtda.kernels.matmul import bmm
from dtda.ops import alloc

CHUNK_ELEMENTS = 1 << 26  # float32 elements of rotated factors held at once (256 MiB)


@triton.jit
def _squared_gradients(GR, AR, L, N, T, O, I, n_per_split,
                       sgn, sgt, sgo, san, sat, sai, sls, slo, sli,
                       BT: tl.constexpr, BO: tl.constexpr, BI: tl.constexpr):
    # grid: (output tiles, splits over examples); L[split] = Σ_{n in split} (Σ_t g̃_nt ã_ntᵀ)^∘2
    pid = tl.program_id(0)
    split = tl.program_id(1)
    tiles_i = tl.cdiv(I, BI)
    ro = (pid // tiles_i) * BO + tl.arange(0, BO)
    ri = (pid % tiles_i) * BI + tl.arange(0, BI)
    o_ok, i_ok = ro < O, ri < I
    acc = tl.zeros((BO, BI), dtype=tl.float32)
    n_lo = split * n_per_split
    n_hi = tl.minimum(N, n_lo + n_per_split)
    g_n = GR + n_lo.to(tl.int64) * sgn  # 64-bit pointers advanced per example
    a_n = AR + n_lo.to(tl.int64) * san
    for _ in range(n_lo, n_hi):
        Gn = tl.zeros((BO, BI), dtype=tl.float32)
        for t0 in range(0, T, BT):
            rt = t0 + tl.arange(0, BT)
            t_ok = rt < T
            g = tl.load(g_n + rt[None, :] * sgt + ro[:, None] * sgo,
                        mask=o_ok[:, None] & t_ok[None, :], other=0.0)
            a = tl.load(a_n + rt[:, None] * sat + ri[None, :] * sai,
                        mask=t_ok[:, None] & i_ok[None, :], other=0.0)
            Gn = tiles.dot(g, a, Gn, False)
        acc += Gn * Gn
        g_n += sgn
        a_n += san
    tl.store(L + split.to(tl.int64) * sls + ro[:, None] * slo + ri[None, :] * sli, acc,
             mask=o_ok[:, None] & i_ok[None, :])


def _accumulate(gr: torch.Tensor, ar: torch.Tensor, out: torch.Tensor) -> None:
    """out = Σ_n (Σ_t gr_nt ar_ntᵀ)^∘2 for rotated factors gr [n, T, O], ar [n, T, I]."""
    n, T, O = gr.shape
    I = ar.shape[2]
    BT, BO, BI = tiles.block(T, 32), tiles.block(O), tiles.block(I)
    n_tiles = triton.cdiv(O, BO) * triton.cdiv(I, BI)
    split = tiles.split_count(n_tiles, n, out.device)
    n_per_split = triton.cdiv(n, split)
    target = out.unsqueeze(0) if split == 1 else torch.empty((split, O, I), dtype=torch.float32, device=out.device)
    _squared_gradients[(n_tiles, split)](
        gr, ar, target, n, T, O, I, n_per_split, *gr.stride(), *ar.stride(), *target.stride(),
        BT=BT, BO=BO, BI=BI, num_warps=4)
    if split > 1:
        torch.sum(target, dim=0, out=out)


def ekfac_eigvals(a: torch.Tensor, g: torch.Tensor, QA: torch.Tensor, QS: torch.Tensor) -> torch.Tensor:
    """``Σ_n (QSᵀ G_n QA)^∘2`` for a [N, T, I], g [N, T, O], QA [I, I], QS [O, O]. Returns [O, I]."""
    N, T, I = a.shape
    O = g.shape[2]
    out = alloc.empty((O, I), torch.float32, a.device)
    if out.numel() == 0:
        return out
    if N * T == 0:
        return out.zero_()
    chunk = max(1, CHUNK_ELEMENTS // (T * (I + O)))
    for n0 in range(0, N, chunk):
        n1 = min(N, n0 + chunk)
        ar = bmm(a[n0:n1].reshape(-1, I), QA)  # rows ã_ntᵀ = a_ntᵀ QA
        gr = bmm(g[n0:n1].reshape(-1, O), QS)
        part = out if n0 == 0 else torch.empty_like(out)
        if T == 1:
            bmm(gr.T, ar, square=True, out=part)
        else:
            _accumulate(gr.view(n1 - n0, T, O), ar.view(n1 - n0, T, I), part)
        if n0:
            out += part
    return out
