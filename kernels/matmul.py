"""Batched strided matrix products with fused prologue and epilogue, the workhorse of several ops.

``C[b] = (f(A[b]) @ f(B[b])) ∘ S`` for A [Bt, M, K], B [Bt, K, N], where the prologue ``f``
optionally weights A's columns (``A[b, :, k] · w_k``) and squares both operands elementwise, and
the epilogue optionally multiplies by a scale matrix S [M, N]. Any strides are accepted, so a
transpose is a stride swap and a broadcast batch is stride 0 (``expand``). Accumulation is
float32; the result is float32. A long reduction (large K, few output tiles) is split into
independent partial products that are summed afterwards, which keeps the result deterministic
(no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dtda.kernels import tiles
from dtda.ops import alloc


@triton.jit
def _bmm_kernel(A, B, C, S, W, M, N, K, k_per_split,
                sab, sam, sak, sbb, sbk, sbn, scs, scb, scm, scn, ssm, ssn, sw,
                HAS_SCALE: tl.constexpr, HAS_WEIGHT: tl.constexpr, SQUARE: tl.constexpr,
                NATIVE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # grid: (output tiles, batch, split of the reduction)
    pid = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)
    tiles_n = tl.cdiv(N, BN)
    rm = (pid // tiles_n) * BM + tl.arange(0, BM)
    rn = (pid % tiles_n) * BN + tl.arange(0, BN)
    m_ok, n_ok = rm < M, rn < N
    rm64, rn64 = rm.to(tl.int64), rn.to(tl.int64)
    k_lo = split * k_per_split
    k_hi = tl.minimum(K, k_lo + k_per_split)
    a_rows = A + batch * sab + rm64[:, None] * sam
    b_cols = B + batch * sbb + rn64[None, :] * sbn
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BK):
        rk = k0 + tl.arange(0, BK)
        k_ok = rk < k_hi
        rk64 = rk.to(tl.int64)
        if HAS_WEIGHT:
            # k with w_k = 0 is not read in A or B: NaN/Inf under a zero mask stays out
            w = tl.load(W + rk64 * sw, mask=k_ok, other=0.0).to(tl.float32)
            k_ok = k_ok & (w != 0.0)
        x = tl.load(a_rows + rk64[None, :] * sak, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        y = tl.load(b_cols + rk64[:, None] * sbk, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if HAS_WEIGHT:
            x = x.to(tl.float32) * w[None, :]
        if SQUARE:
            x = x.to(tl.float32)
            y = y.to(tl.float32)
            x = x * x
            y = y * y
        acc = tiles.dot(x, y, acc, NATIVE)
    ok = m_ok[:, None] & n_ok[None, :]
    if HAS_SCALE:
        acc = acc * tl.load(S + rm64[:, None] * ssm + rn64[None, :] * ssn, mask=ok, other=0.0).to(tl.float32)
    c = C + split.to(tl.int64) * scs + batch * scb + rm64[:, None] * scm + rn64[None, :] * scn
    tl.store(c, acc, mask=ok)


def bmm(a: torch.Tensor, b: torch.Tensor, *, scale: torch.Tensor | None = None,
        weight: torch.Tensor | None = None, square: bool = False,
        out: torch.Tensor | None = None, split: int | None = None) -> torch.Tensor:
    """``(f(a) @ f(b)) ∘ scale`` in float32, batched over a leading dimension.

    a: [Bt, M, K] or [M, K]; b: [Bt, K, N] or [K, N] (same rank as a); scale: [M, N] or None;
    weight: [K] column weights of a, or None (k with weight 0 is not read in a or b: NaN or Inf
    there stays out of the result); square: square a and b elementwise first.
    out: a float32 [Bt, M, N] (or [M, N]) tensor to write into; allocated if None.
    split: number of partial reductions (None: sized to the device; 1 on CPU).
    """
    if a.dim() != b.dim() or a.dim() not in (2, 3):
        raise ValueError(f"bmm: a and b must both be 2-D or 3-D, got shapes {list(a.shape)} and {list(b.shape)}")
    two_d = a.dim() == 2
    a3, b3 = (a.unsqueeze(0), b.unsqueeze(0)) if two_d else (a, b)
    Bt, M, K = a3.shape
    if b3.shape[0] != Bt or b3.shape[1] != K:
        raise ValueError(f"bmm: b has shape {list(b.shape)}, expected [{Bt}, {K}, N] to match a {list(a.shape)}")
    N = b3.shape[2]
    if out is None:
        out = alloc.empty((M, N) if two_d else (Bt, M, N), torch.float32, a.device)
    out3 = out.unsqueeze(0) if two_d else out
    if out3.numel() == 0:
        return out
    BM, BN, BK = tiles.block(M), tiles.block(N), tiles.block(K, 32)
    tiles_mn = triton.cdiv(M, BM) * triton.cdiv(N, BN)
    steps = triton.cdiv(K, BK)
    if split is None:
        split = tiles.split_count(tiles_mn * Bt, steps, a.device)
    split = max(1, min(split, max(steps, 1)))
    k_per_split = max(1, triton.cdiv(steps, split)) * BK
    split = max(1, triton.cdiv(K, k_per_split))
    target = out3 if split == 1 else torch.empty((split, Bt, M, N), dtype=torch.float32, device=a.device)
    if split == 1:
        scs, (scb, scm, scn) = 0, out3.stride()
    else:
        scs, scb, scm, scn = target.stride()
    ssm, ssn = scale.stride() if scale is not None else (0, 0)
    native = tiles.native_dot(a, b) and weight is None and not square
    _bmm_kernel[(tiles_mn, Bt, split)](
        a3, b3, target, scale if scale is not None else target, weight if weight is not None else target,
        M, N, K, k_per_split, *a3.stride(), *b3.stride(), scs, scb, scm, scn, ssm, ssn,
        weight.stride(0) if weight is not None else 0,
        HAS_SCALE=scale is not None, HAS_WEIGHT=weight is not None, SQUARE=square, NATIVE=native,
        BM=BM, BN=BN, BK=BK, num_warps=4)
    if split > 1:
        torch.sum(target, dim=0, out=out3)
    return out
