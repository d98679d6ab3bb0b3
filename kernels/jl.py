"""Johnson–Lindenstrauss projection ``Y = X R / √k`` with R [P, k] regenerated tile by tile.

R is never stored: each [BP, BJ] tile is regenerated from Philox4x32-10 counters exactly as
specified above ``philox4x32`` in ``dtda/ops/reference.py`` (key = seed split into 32-bit
words; Rademacher counter (p_lo, p_hi, j div 128, 0), bit j mod 32 of word (j mod 128) div 32;
Gaussian counter (p_lo, p_hi, j div 2, 1) and Box–Muller on words (0, 1) or (2, 3)).
``tl.philox(seed, c0, c1, c2, c3)`` runs these same rounds with key (seed mod 2^32,
seed div 2^32) on uint32 counters, so Rademacher entries are bit-identical to the reference.
A Rademacher tile spans 128 columns, so one Philox call per row gives the whole tile row.
Box–Muller runs in float64 (then rounds to float32) to stay close to the float64 reference.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from dtda.kernels import tiles
from dtda.ops import alloc

RADEMACHER_COLUMNS = 128  # columns of R covered by one Philox call (4 words of 32 bits)


@triton.jit
def _row_counters(rp):
    """The low and high 32-bit words of row indices ``rp``."""
    p64 = rp.to(tl.int64)
    return (p64 & 0xFFFFFFFF).to(tl.uint32), (p64 >> 32).to(tl.uint32)


@triton.jit
def _rademacher_tile(seed, rp, j0, BJ: tl.constexpr):
    """R[rp, j0 : j0 + BJ] in {-1, +1} as float32; j0 is a multiple of BJ == 128."""
    tl.static_assert(BJ == 128, "a Rademacher tile spans exactly one Philox call's 128 bits")
    c0, c1 = _row_counters(rp)
    c2 = tl.zeros_like(c0) + (j0 // 128).to(tl.uint32)
    c3 = tl.zeros_like(c0)
    w0, w1, w2, w3 = tl.philox(seed, c0, c1, c2, c3, n_rounds=10)
    rj = tl.arange(0, BJ)
    which = (rj >> 5)[None, :]
    word = tl.where(which == 0, w0[:, None], tl.where(which == 1, w1[:, None],
                    tl.where(which == 2, w2[:, None], w3[:, None])))
    bit = (word >> (rj & 31).to(tl.uint32)[None, :]) & 1
    return bit.to(tl.float32) * 2.0 - 1.0


@triton.jit
def _gaussian_tile(seed, rp, rj, BP: tl.constexpr, BJ: tl.constexpr):
    """R[rp, rj] ~ N(0, 1) by Box–Muller on Philox words, as float32; rp [BP], rj [BJ]."""
    c0, c1 = _row_counters(rp)
    shape_zero = tl.zeros((BP, BJ), dtype=tl.uint32)
    c0 = c0[:, None] + shape_zero
    c1 = c1[:, None] + shape_zero
    c2 = (rj >> 1).to(tl.uint32)[None, :] + shape_zero
    c3 = shape_zero + 1
    w0, w1, w2, w3 = tl.philox(seed, c0, c1, c2, c3, n_rounds=10)
    first = ((rj & 1) == 0)[None, :]
    u1 = (tl.where(first, w0, w2).to(tl.float64) + 1.0) * 2.3283064365386963e-10  # 2^-32
    u2 = tl.where(first, w1, w3).to(tl.float64) * 2.3283064365386963e-10
    r = tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)
    return r.to(tl.float32)


@triton.jit(do_not_specialize=["seed"])
def _jl_project(X, Y, seed, N, P, K, inv_sqrt_k, sxn, sxp, syn, syk,
                GAUSSIAN: tl.constexpr, NATIVE: tl.constexpr,
                BN: tl.constexpr, BP: tl.constexpr, BJ: tl.constexpr):
    # grid: (row blocks of X, column blocks of R)
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    j0 = tl.program_id(1) * BJ
    rj = j0 + tl.arange(0, BJ)
    n_ok = rn < N
    rn64 = rn.to(tl.int64)
    acc = tl.zeros((BN, BJ), dtype=tl.float32)
    for p0 in range(0, P, BP):
        rp = p0 + tl.arange(0, BP)
        x = tl.load(X + rn64[:, None] * sxn + rp.to(tl.int64)[None, :] * sxp,
                    mask=n_ok[:, None] & (rp < P)[None, :], other=0.0)
        if GAUSSIAN:
            r = _gaussian_tile(seed, rp, rj, BP, BJ)
        else:
            r = _rademacher_tile(seed, rp, j0, BJ)
        if NATIVE:
            r = r.to(x.dtype)  # ±1 is exact in half precision
        acc = tiles.dot(x, r, acc, NATIVE)
    tl.store(Y + rn64[:, None] * syn + rj[None, :] * syk, acc * inv_sqrt_k,
             mask=n_ok[:, None] & (rj < K)[None, :])


def jl_project(x: torch.Tensor, k: int, seed: int, kind: str) -> torch.Tensor:
    """``X R / √k`` for x [N, P], R [P, k] from Philox (kind "rademacher" or "gaussian"). Returns [N, k]."""
    if kind not in ("rademacher", "gaussian"):
        raise ValueError(f"jl_project: kind must be 'rademacher' or 'gaussian', got {kind!r}")
    N, P = x.shape
    out = alloc.empty((N, k), torch.float32, x.device)
    if out.numel() == 0:
        return out
    gaussian = kind == "gaussian"
    BN, BP = tiles.block(N), 32
    BJ = 64 if gaussian else RADEMACHER_COLUMNS
    _jl_project[(triton.cdiv(N, BN), triton.cdiv(k, BJ))](
        x, out, seed, N, P, k, 1.0 / math.sqrt(k), *x.stride(), *out.stride(),
        GAUSSIAN=gaussian, NATIVE=tiles.native_dot(x) and not gaussian,
        BN=BN, BP=BP, BJ=BJ, num_warps=8)
    return out
