"""Seed statistics of removal effects over K seeds, one program per block of (n, q) columns.

For m [K, Q] and δ [K, N, Q], per column (n, q) with all K seeds of the column in registers:

    mean = Σ_s δ_s / K,  var = Σ_s (δ_s − mean)² / (K − 1),
    cov = Σ_s (m_s − m̄)(δ_s − mean) / (K − 1),
    var_increase = var(m + δ) − var(m) = 2 cov + var  (exact, without cancellation),
    w2 = ( Σ_i (sort(m + δ)_i − sort(m)_i)² / K )^½.

The sorts are bitonic (``tl.sort``) over K padded to a power of two with +inf (padding sorts
last and is masked out), so K is limited to ``K_MAX``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dtda.ops import alloc
from dtda.ops.reference import SeedMoments

K_MAX = 4096  # seeds held in registers per column; larger K is refused
TILE_ELEMENTS = 4096  # columns × padded seeds per program


@triton.jit
def _seed_moments(Mm, D, MEAN, VAR, COV, VINC, W2, K, Q, C,
                  smk, smq, sdk, sdn, sdq, BC: tl.constexpr, BK: tl.constexpr):
    # grid: (column blocks,); a column c = n·Q + q; outputs are contiguous [N, Q]
    c = tl.program_id(0).to(tl.int64) * BC + tl.arange(0, BC)
    n, q = c // Q, c % Q
    rk = tl.arange(0, BK)
    k_ok = rk < K
    rk64 = rk.to(tl.int64)
    ok = (c < C)[:, None] & k_ok[None, :]
    d = tl.load(D + rk64[None, :] * sdk + n[:, None] * sdn + q[:, None] * sdq, mask=ok, other=0.0).to(tl.float32)
    m = tl.load(Mm + rk64[None, :] * smk + q[:, None] * smq, mask=ok, other=0.0).to(tl.float32)
    mean = tl.sum(d, axis=1) / K
    dc = tl.where(ok, d - mean[:, None], 0.0)
    mc = tl.where(ok, m - (tl.sum(m, axis=1) / K)[:, None], 0.0)
    var = tl.sum(dc * dc, axis=1) / (K - 1)
    cov = tl.sum(mc * dc, axis=1) / (K - 1)
    after = tl.sort(tl.where(ok, m + d, float("inf")), dim=1)
    before = tl.sort(tl.where(ok, m, float("inf")), dim=1)
    gap = tl.where(ok, after, 0.0) - tl.where(ok, before, 0.0)  # no inf − inf
    w2 = tl.sqrt(tl.sum(gap * gap, axis=1) / K)
    c_ok = c < C
    tl.store(MEAN + c, mean, mask=c_ok)
    tl.store(VAR + c, var, mask=c_ok)
    tl.store(COV + c, cov, mask=c_ok)
    tl.store(VINC + c, 2.0 * cov + var, mask=c_ok)
    tl.store(W2 + c, w2, mask=c_ok)


def seed_moments(m: torch.Tensor, delta: torch.Tensor) -> SeedMoments:
    """Statistics over K seeds for m [K, Q], delta [K, N, Q]; each field [N, Q] float32."""
    K, N, Q = delta.shape
    if K > K_MAX:
        raise ValueError(f"seed_moments (triton): K = {K} seeds exceeds the kernel's limit of {K_MAX}; "
                         "use another backend (e.g. DTDA_BACKEND=torch)")
    outs = [alloc.empty((N, Q), torch.float32, delta.device) for _ in range(5)]
    C = N * Q
    if C == 0:
        return SeedMoments(*outs)
    BK = triton.next_power_of_2(K)
    BC = max(1, min(64, TILE_ELEMENTS // BK, triton.next_power_of_2(C)))
    _seed_moments[(triton.cdiv(C, BC),)](
        m, delta, *outs, K, Q, C, *m.stride(), *delta.stride(),
        BC=BC, BK=BK, num_warps=4 if BC * BK <= 2048 else 8)
    return SeedMoments(*outs)
