"""The ``torch`` backend: the best pure-PyTorch formulation of each op.

Unlike the readable reference, these choose the contraction order per call (by T, Q, I, O) and
chunk over examples to bound peak memory. They are the baseline native kernels must beat
(``python -m benchmarks.ops``) and the catch-all where no native kernel applies.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dtda.ops import alloc, reference
from dtda.ops.registry import ALL_FLOATS, Backend, add_backend, register

BACKEND = add_backend(Backend(
    name="torch", priority=10, devices=frozenset({"cpu", "cuda"}),
    dtypes=ALL_FLOATS, unavailable=lambda: ""))

# ---- kron_covariance / ghost_dot / ghost_pairwise / ekfac_eigvals / kron_apply (helper: linear ops)

# Bytes of intermediates per chunk of examples (or queries) in the linear-layer ops.
_LINEAR_CHUNK_BYTES = 256 << 20


def _acc(*tensors: Tensor) -> list[Tensor]:
    """The tensors in their accumulation dtype (half → float32)."""
    return [t.to(reference.result_dtype(t.dtype)) for t in tensors]


def _chunk(per_item_elems: int, dtype: torch.dtype) -> int:
    """Items per chunk so that ``per_item_elems`` intermediates per item stay within the budget."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return max(1, _LINEAR_CHUNK_BYTES // max(1, per_item_elems * itemsize))


def _cost_project(N: int, T: int, I: int, O: int, Q: int) -> float:
    """FLOPs of ghost_dot by projecting tokens onto M (P = a Mᵀ per token)."""
    return 2.0 * N * T * I * O * Q


def _cost_form(N: int, T: int, I: int, O: int, Q: int) -> float:
    """FLOPs of ghost_dot by forming G_n (2NOI(T+Q)), plus N·O·I for G's memory traffic."""
    return N * O * I * (2.0 * (T + Q) + 1.0)


@register("kron_covariance", "torch")
def kron_covariance(x: Tensor, mask: Tensor | None) -> Tensor:
    """``Σ_r w_r x_r x_rᵀ`` over rows r = (n, t): one GEMM ``(w∘x)ᵀ x``, chunked over rows when
    weighted (gathering the kept rows of a bool mask costs more than it saves). Rows with weight 0
    are zeroed first: masked positions are not read (:func:`reference.unmasked`)."""
    (x,) = _acc(x)
    x = reference.unmasked(x, mask)
    N, T, D = x.shape
    rows = x.reshape(N * T, D)  # not (-1, D): that is ambiguous when D = 0
    if mask is None:
        return rows.T @ rows
    weights = mask.reshape(-1)
    out = torch.zeros(D, D, dtype=x.dtype, device=x.device)
    step = _chunk(D, x.dtype)
    for r0 in range(0, rows.shape[0], step):
        xr, wr = rows[r0:r0 + step], weights[r0:r0 + step]
        out.addmm_((xr * wr.to(x.dtype).unsqueeze(1)).T, xr)
    return out


def _ghost_dot_into(out: Tensor, a: Tensor, g: Tensor, M: Tensor) -> Tensor:
    """``out[n, q] = ⟨G_n, M_q⟩`` by the cheaper contraction order, in chunks of examples."""
    N, T, I = a.shape
    Q, O, _ = M.shape
    if _cost_project(N, T, I, O, Q) <= _cost_form(N, T, I, O, Q):
        M_rows = M.reshape(Q * O, I)
        step = _chunk(T * Q * O, a.dtype)
        for n0 in range(0, N, step):
            ac, gc = a[n0:n0 + step], g[n0:n0 + step]
            P = (ac.reshape(ac.shape[0] * T, I) @ M_rows.T).view(ac.shape[0], T, Q, O)  # M_q a_nt
            out[n0:n0 + step] = torch.einsum("ntqo,nto->nq", P, gc)
    else:
        M_flat = M.reshape(Q, O * I)
        step = _chunk(O * I, a.dtype)
        for n0 in range(0, N, step):
            G = torch.bmm(g[n0:n0 + step].transpose(1, 2), a[n0:n0 + step])  # [n, O, I]
            torch.mm(G.view(G.shape[0], O * I), M_flat.T, out=out[n0:n0 + step])
    return out


@register("ghost_dot", "torch")
def ghost_dot(a: Tensor, g: Tensor, M: Tensor) -> Tensor:
    """``S[n, q] = Σ_t g_ntᵀ M_q a_nt``: project tokens onto M when T·Q ≲ T + Q, else form G_n."""
    a, g, M = _acc(a, g, M)
    out = alloc.empty((a.shape[0], M.shape[0]), a.dtype, a.device)
    return _ghost_dot_into(out, a, g, M)


@register("ghost_pairwise", "torch")
def ghost_pairwise(a_q: Tensor, g_q: Tensor, a: Tensor, g: Tensor) -> Tensor:
    """``S[q, n] = ⟨G_q, G_n⟩``: token Gram products (g_q gᵀ)∘(a_q aᵀ) when tokens are few,
    else G_q formed once and ghost_dot against it."""
    a_q, g_q, a, g = _acc(a_q, g_q, a, g)
    Q, S, I = a_q.shape
    N, T, O = g.shape
    gram = 2.0 * Q * S * N * T * (I + O + 1)
    via_g = 2.0 * Q * S * O * I + min(_cost_project(N, T, I, O, Q), _cost_form(N, T, I, O, Q))
    if gram > via_g:
        G_q = torch.bmm(g_q.transpose(1, 2), a_q)
        return _ghost_dot_into(alloc.empty((N, Q), a.dtype, a.device), a, g, G_q).T.contiguous()
    out = alloc.empty((Q, N), a.dtype, a.device)
    gq_rows, aq_rows = g_q.reshape(Q * S, O), a_q.reshape(Q * S, I)
    step = _chunk(3 * Q * S * T, a.dtype)
    for n0 in range(0, N, step):
        gc, ac = g[n0:n0 + step], a[n0:n0 + step]
        n = gc.shape[0]
        gram_g = gq_rows @ gc.reshape(n * T, O).T
        gram_a = aq_rows @ ac.reshape(n * T, I).T
        out[:, n0:n0 + n] = gram_g.mul_(gram_a).view(Q, S, n, T).sum((1, 3))
    return out


@register("ekfac_eigvals", "torch")
def ekfac_eigvals(a: Tensor, g: Tensor, QA: Tensor, QS: Tensor) -> Tensor:
    """``Λ = Σ_n (QSᵀ G_n QA)^∘2``: at T = 1 ``(g QS)^∘2ᵀ (a QA)^∘2``; for T > 1 rotate the tokens
    first (or, when T exceeds about O·I(O+I)/(O²+I²), form G_n first), in chunks of examples."""
    a, g, QA, QS = _acc(a, g, QA, QS)
    N, T, I = a.shape
    O = g.shape[2]
    out = torch.zeros(O, I, dtype=a.dtype, device=a.device)
    rotate_first = T * (O * O + I * I) <= O * I * (O + I)
    step = _chunk(T * (I + O) + (0 if T == 1 else 2 * O * I), a.dtype)
    for n0 in range(0, N, step):
        ac, gc = a[n0:n0 + step], g[n0:n0 + step]
        if T == 1:
            out.addmm_((gc[:, 0] @ QS).square_().T, (ac[:, 0] @ QA).square_())
            continue
        if rotate_first:
            rotated = torch.bmm((gc @ QS).transpose(1, 2), ac @ QA)
        else:
            rotated = QS.T @ torch.bmm(gc.transpose(1, 2), ac) @ QA
        out += rotated.square_().sum(0)
    return out


@register("kron_apply", "torch")
def kron_apply(V: Tensor, QA: Tensor, QS: Tensor, scale: Tensor) -> Tensor:
    """``QS (scale ∘ (QSᵀ V_q QA)) QAᵀ`` in chunks of queries (V_q QA as one GEMM per chunk)."""
    V, QA, QS, scale = _acc(V, QA, QS, scale)
    Q, O, I = V.shape
    out = alloc.empty((Q, O, I), V.dtype, V.device)
    step = _chunk(2 * O * I, V.dtype)
    for q0 in range(0, Q, step):
        inner = (QS.T @ (V[q0:q0 + step] @ QA)).mul_(scale)
        torch.matmul(QS @ inner, QA.T, out=out[q0:q0 + step])
    return out

# ---- jl_project / seed_moments (helper: stats ops)

# Entries of R generated at once (bounds the Philox temporaries to a few tens of MiB).
_JL_CHUNK = 1 << 21
# δ values (K·n·Q) per chunk of examples in seed_moments.
_SEED_CHUNK = 1 << 22
_WORD = 0xFFFFFFFF


def _per_call(kind: str) -> int:
    """Entries of R per Philox call: 128 Rademacher signs or 2 Gaussians."""
    return 128 if kind == "rademacher" else 2


def _jl_rows(p0: int, p1: int, k: int, seed: int, kind: str, dtype: torch.dtype,
             device: torch.device, j0: int = 0) -> Tensor:
    """Rows p0..p1, columns j0..j0+k of :func:`reference.jl_matrix` (j0 a multiple of
    :func:`_per_call`), one Philox call per 128 (Rademacher) or 2 (Gaussian) entries instead of
    one per entry."""
    per_call = _per_call(kind)
    calls = -(-k // per_call)
    rows = torch.arange(p0, p1, dtype=torch.int64, device=device).view(-1, 1).expand(-1, calls)
    block = torch.arange(j0 // per_call, j0 // per_call + calls, dtype=torch.int64,
                         device=device).view(1, -1).expand_as(rows)
    stream = torch.full_like(rows, 0 if kind == "rademacher" else 1)
    w = reference.philox4x32((rows & _WORD, rows >> 32, block, stream), (seed & _WORD, (seed >> 32) & _WORD))
    if kind == "rademacher":
        # Column 128 g + 32 i + b is bit b of word i of call g.
        shifts = torch.arange(32, dtype=torch.int64, device=device)
        bits = (torch.stack(w, -1).unsqueeze(-1) >> shifts) & 1
        return (2 * bits - 1).view(p1 - p0, calls * 128)[:, :k].to(dtype)
    w = [word.to(torch.float64) for word in w]
    pairs = [torch.sqrt(-2.0 * torch.log((w0 + 1.0) * 2.0**-32)) * torch.cos(2.0 * math.pi * (w1 * 2.0**-32))
             for w0, w1 in ((w[0], w[1]), (w[2], w[3]))]
    return torch.stack(pairs, -1).view(p1 - p0, calls * 2)[:, :k].to(dtype)


@register("jl_project", "torch")
def jl_project(x: Tensor, k: int, seed: int, kind: str) -> Tensor:
    """``X R / √k`` for x [N, P], accumulating X[:, rows] R[rows, cols] over tiles of R of at most
    about ``_JL_CHUNK`` entries (column blocks when one row of R is longer than that), so memory
    stays bounded for any k; an empty x generates no R."""
    x = x.to(reference.result_dtype(x.dtype))
    N, P = x.shape
    y = x.new_zeros((N, k))
    if y.numel() == 0 or P == 0:
        return y
    per_call = _per_call(kind)
    cols = min(k, max(per_call, _JL_CHUNK // per_call * per_call))
    step = max(1, _JL_CHUNK // cols)
    for j0 in range(0, k, cols):
        j1 = min(k, j0 + cols)
        for p0 in range(0, P, step):
            p1 = min(P, p0 + step)
            y[:, j0:j1].addmm_(x[:, p0:p1], _jl_rows(p0, p1, j1 - j0, seed, kind, x.dtype, x.device, j0))
    return y.div_(math.sqrt(k))


@register("seed_moments", "torch")
def seed_moments(m: Tensor, delta: Tensor) -> reference.SeedMoments:
    """Seed moments over chunks of examples; var_increase = Σ δc (2 mc + δc) / (K−1) (centred, so
    no cancellation against var(m)), W2 from sorting along the seed dimension."""
    dtype = reference.result_dtype(delta.dtype)
    K, N, Q = delta.shape
    m = m.to(dtype)
    mc = (m - m.mean(0)).unsqueeze(1)
    m_sorted = m.sort(0).values.T  # [Q, K]
    out = reference.SeedMoments(*(delta.new_empty((N, Q), dtype=dtype) for _ in range(5)))
    step = max(1, _SEED_CHUNK // max(1, K * Q))
    for n0 in range(0, N, step):
        n1 = min(N, n0 + step)
        d = delta[:, n0:n1].to(dtype)
        mean = d.mean(0)
        dc = d - mean
        var = dc.square().sum(0)
        cov = (dc * mc).sum(0)
        # Sorting along a contiguous last dimension is ~1.6x faster than along dim 0.
        after = (d + m.unsqueeze(1)).permute(1, 2, 0).contiguous()
        out.mean[n0:n1] = mean
        out.var[n0:n1] = var / (K - 1)
        out.cov[n0:n1] = cov / (K - 1)
        out.var_increase[n0:n1] = (2 * cov + var) / (K - 1)
        out.w2[n0:n1] = (after.sort(-1).values - m_sorted).square().mean(-1).sqrt()
    return out
