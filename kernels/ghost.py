"""Per-example gradient inner products of a Linear layer without materialising all G_n.

With G_n = Σ_t g_nt a_ntᵀ [O, I] (a [N, T, I] inputs, g [N, T, O] output gradients):

ghost_dot: ``S[n, q] = ⟨G_n, M_q⟩ = Σ_t g_ntᵀ M_q a_nt`` for M [Q, O, I]. Two contraction orders:

* ``tokens``: per (block of examples, q), ``P = a_·t M_qᵀ`` through tl.dot, then ``Σ_o g ∘ P``;
  costs Q·T·O·I multiply-adds on the tensor cores, the right order for few tokens.
* ``gram``: per (example, block of queries), each [O, I] tile of G_n is formed in registers
  through tl.dot over tokens and contracted with the M_q tiles; costs ⌈Q/BQ⌉·T·O·I on tensor
  cores plus Q·O·I elementwise, the right order for many tokens.

ghost_pairwise: ``S[q, n] = ⟨G_q, G_n⟩``. Two orders:

* ``tokens``: ``Σ_{s,t} (a_qs·a_nt)(g_qs·g_nt)``, a [Q-block, N-block] tile of two token Gram
  products per (s, t); costs Q·N·S·T·(I+O).
* ``gradients``: form G_q, and G_n in chunks of examples (bounded memory), with the batched
  product of :mod:`dtda.kernels.matmul`, then contract; costs (Q·S + N·T + Q·N)·O·I.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dtda.kernels import tiles
from dtda.kernels.matmul import bmm
from dtda.ops import alloc

GRAM_TILE_COST = 4  # an elementwise multiply-add of the gram order counts as this many tensor-core ones
CHUNK_ELEMENTS = 1 << 26  # float32 elements of per-example gradients held at once (256 MiB)


@triton.jit
def _ghost_dot_tokens(A, G, M, S, N, T, I, O,
                      san, sat, sai, sgn, sgt, sgo, smq, smo, smi, ssn, ssq,
                      NATIVE: tl.constexpr, BN: tl.constexpr, BO: tl.constexpr, BI: tl.constexpr):
    # grid: (example blocks, Q)
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    q = tl.program_id(1).to(tl.int64)
    n_ok = rn < N
    rn64 = rn.to(tl.int64)
    s = tl.zeros((BN,), dtype=tl.float32)
    for t in range(T):
        for o0 in range(0, O, BO):
            ro = o0 + tl.arange(0, BO)
            o_ok = ro < O
            P = tl.zeros((BN, BO), dtype=tl.float32)
            for i0 in range(0, I, BI):
                ri = i0 + tl.arange(0, BI)
                i_ok = ri < I
                a = tl.load(A + rn64[:, None] * san + t * sat + ri[None, :] * sai,
                            mask=n_ok[:, None] & i_ok[None, :], other=0.0)
                m = tl.load(M + q * smq + ro[None, :] * smo + ri[:, None] * smi,
                            mask=i_ok[:, None] & o_ok[None, :], other=0.0)
                P = tiles.dot(a, m, P, NATIVE)
            g = tl.load(G + rn64[:, None] * sgn + t * sgt + ro[None, :] * sgo,
                        mask=n_ok[:, None] & o_ok[None, :], other=0.0)
            s += tl.sum(P * g.to(tl.float32), axis=1)
    tl.store(S + rn64 * ssn + q * ssq, s, mask=n_ok)


@triton.jit
def _ghost_dot_gram(A, G, M, S, T, I, O, Q,
                    san, sat, sai, sgn, sgt, sgo, smq, smo, smi, ssn, ssq,
                    NATIVE: tl.constexpr, BQ: tl.constexpr, BT: tl.constexpr,
                    BO: tl.constexpr, BI: tl.constexpr):
    # grid: (N, query blocks)
    n = tl.program_id(0).to(tl.int64)
    rq = tl.program_id(1) * BQ + tl.arange(0, BQ)
    s = tl.zeros((BQ,), dtype=tl.float32)
    for o0 in range(0, O, BO):
        ro = o0 + tl.arange(0, BO)
        o_ok = ro < O
        for i0 in range(0, I, BI):
            ri = i0 + tl.arange(0, BI)
            i_ok = ri < I
            Gn = tl.zeros((BO, BI), dtype=tl.float32)  # tile of G_n = Σ_t g_nt a_ntᵀ
            for t0 in range(0, T, BT):
                rt = t0 + tl.arange(0, BT)
                t_ok = rt < T
                g = tl.load(G + n * sgn + rt[None, :] * sgt + ro[:, None] * sgo,
                            mask=o_ok[:, None] & t_ok[None, :], other=0.0)
                a = tl.load(A + n * san + rt[:, None] * sat + ri[None, :] * sai,
                            mask=t_ok[:, None] & i_ok[None, :], other=0.0)
                Gn = tiles.dot(g, a, Gn, NATIVE)
            for j in range(tl.minimum(Q - tl.program_id(1) * BQ, BQ)):
                q = tl.program_id(1) * BQ + j
                m = tl.load(M + q.to(tl.int64) * smq + ro[:, None] * smo + ri[None, :] * smi,
                            mask=o_ok[:, None] & i_ok[None, :], other=0.0)
                s = tl.where(rq == q, s + tl.sum(tl.sum(Gn * m.to(tl.float32), axis=1), axis=0), s)
    tl.store(S + n * ssn + rq * ssq, s, mask=rq < Q)


def ghost_dot_order(T: int, Q: int) -> str:
    """The cheaper contraction order of ghost_dot for T tokens and Q queries (see module doc)."""
    BQ = tiles.block(Q, 32)
    gram = triton.cdiv(Q, BQ) * max(T, tiles.MIN_BLOCK) + GRAM_TILE_COST * Q
    return "tokens" if Q * T <= gram else "gram"


def ghost_dot(a: torch.Tensor, g: torch.Tensor, M: torch.Tensor, order: str | None = None) -> torch.Tensor:
    """``S[n, q] = Σ_t g_ntᵀ M_q a_nt`` for a [N, T, I], g [N, T, O], M [Q, O, I]. Returns [N, Q].

    ``order`` forces "tokens" or "gram" (None: :func:`ghost_dot_order`).
    """
    N, T, I = a.shape
    Q, O, _ = M.shape
    order = order or ghost_dot_order(T, Q)
    S = alloc.empty((N, Q), torch.float32, a.device)
    if S.numel() == 0:
        return S
    native = tiles.native_dot(a, g, M)
    strides = (*a.stride(), *g.stride(), *M.stride(), *S.stride())
    BO, BI = tiles.block(O), tiles.block(I, 32)
    if order == "tokens":
        BN = tiles.block(N)
        _ghost_dot_tokens[(triton.cdiv(N, BN), Q)](
            a, g, M, S, N, T, I, O, *strides, NATIVE=native, BN=BN, BO=BO, BI=BI, num_warps=4)
    elif order == "gram":
        BQ, BT = tiles.block(Q, 32), tiles.block(T, 32)
        _ghost_dot_gram[(N, triton.cdiv(Q, BQ))](
            a, g, M, S, T, I, O, Q, *strides, NATIVE=native, BQ=BQ, BT=BT, BO=BO, BI=BI, num_warps=4)
    else:
        raise ValueError(f"ghost_dot: order must be 'tokens', 'gram' or None, got {order!r}")
    return S


@triton.jit
def _ghost_pairwise_tokens(AQ, GQ, A, G, S, Q, N, SQ, T, I, O,
                           saq, sas, sai, sgq, sgs, sgo, san, sat, sbi, shn, sht, sho, ssq, ssn,
                           NATIVE: tl.constexpr, BQ: tl.constexpr, BN: tl.constexpr,
                           BI: tl.constexpr, BO: tl.constexpr):
    # grid: (query blocks, example blocks)
    rq = tl.program_id(0) * BQ + tl.arange(0, BQ)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    q_ok, n_ok = rq < Q, rn < N
    rq64, rn64 = rq.to(tl.int64), rn.to(tl.int64)
    acc = tl.zeros((BQ, BN), dtype=tl.float32)
    for s in range(SQ):
        for t in range(T):
            ga = tl.zeros((BQ, BN), dtype=tl.float32)  # a_qs · a_nt
            for i0 in range(0, I, BI):
                ri = i0 + tl.arange(0, BI)
                i_ok = ri < I
                x = tl.load(AQ + rq64[:, None] * saq + s * sas + ri[None, :] * sai,
                            mask=q_ok[:, None] & i_ok[None, :], other=0.0)
                y = tl.load(A + rn64[None, :] * san + t * sat + ri[:, None] * sbi,
                            mask=i_ok[:, None] & n_ok[None, :], other=0.0)
                ga = tiles.dot(x, y, ga, NATIVE)
            gg = tl.zeros((BQ, BN), dtype=tl.float32)  # g_qs · g_nt
            for o0 in range(0, O, BO):
                ro = o0 + tl.arange(0, BO)
                o_ok = ro < O
                x = tl.load(GQ + rq64[:, None] * sgq + s * sgs + ro[None, :] * sgo,
                            mask=q_ok[:, None] & o_ok[None, :], other=0.0)
                y = tl.load(G + rn64[None, :] * shn + t * sht + ro[:, None] * sho,
                            mask=o_ok[:, None] & n_ok[None, :], other=0.0)
                gg = tiles.dot(x, y, gg, NATIVE)
            acc += ga * gg
    tl.store(S + rq64[:, None] * ssq + rn64[None, :] * ssn, acc, mask=q_ok[:, None] & n_ok[None, :])


def ghost_pairwise_order(S: int, T: int, I: int, O: int) -> str:
    """The cheaper order of ghost_pairwise: token Grams unless S·T·(I+O) exceeds O·I."""
    return "tokens" if S * T * (I + O) <= O * I else "gradients"


def _per_example_gradients(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """G_n = g_nᵀ a_n [B, O, I] in float32, one batched product."""
    return bmm(g.transpose(1, 2), a)


def ghost_pairwise(a_q: torch.Tensor, g_q: torch.Tensor, a: torch.Tensor, g: torch.Tensor,
                   order: str | None = None) -> torch.Tensor:
    """``S[q, n] = ⟨G_q, G_n⟩`` for a_q [Q, S, I], g_q [Q, S, O], a [N, T, I], g [N, T, O]. Returns [Q, N].

    ``order`` forces "tokens" or "gradients" (None: :func:`ghost_pairwise_order`).
    """
    Q, SQ, I = a_q.shape
    N, T, O = g.shape
    order = order or ghost_pairwise_order(SQ, T, I, O)
    out = alloc.empty((Q, N), torch.float32, a.device)
    if out.numel() == 0:
        return out
    if order == "tokens":
        BQ, BN = tiles.block(Q), tiles.block(N)
        _ghost_pairwise_tokens[(triton.cdiv(Q, BQ), triton.cdiv(N, BN))](
            a_q, g_q, a, g, out, Q, N, SQ, T, I, O,
            *a_q.stride(), *g_q.stride(), *a.stride(), *g.stride(), *out.stride(),
            NATIVE=tiles.native_dot(a_q, g_q, a, g), BQ=BQ, BN=BN,
            BI=tiles.block(I, 32), BO=tiles.block(O, 32), num_warps=4)
    elif order == "gradients":
        Gq = _per_example_gradients(a_q, g_q).reshape(Q, O * I)
        chunk = max(1, CHUNK_ELEMENTS // max(O * I, 1))
        for n0 in range(0, N, chunk):
            n1 = min(N, n0 + chunk)
            Gn = _per_example_gradients(a[n0:n1], g[n0:n1]).reshape(n1 - n0, O * I)
            bmm(Gq, Gn.T, out=out[:, n0:n1])
    else:
        raise ValueError(f"ghost_pairwise: order must be 'tokens', 'gradients' or None, got {order!r}")
    return out
