"""Kronecker-factor ops on top of the batched product of :mod:`dtda.kernels.matmul`.

kron_covariance: ``C = Σ_r w_r x_r x_rᵀ = Xᵀ diag(w) X`` over the R = N·T rows of x [N, T, D],
one product with a weighted prologue and the reduction over rows split across programs.

kron_apply: ``out_q = QS (scale ∘ (QSᵀ V_q QA)) QAᵀ`` for V [Q, O, I], as four batched
products ``U = V QA``, ``W = scale ∘ (QSᵀ U)`` (fused epilogue), ``Z = W QAᵀ``, ``QS Z``, with
float32 intermediates (the broadcast factors are stride-0 batches).
"""

from __future__ import annotations

import torch

from dtda.kernels.matmul import bmm
from dtda.ops import alloc


def kron_covariance(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``Σ_{n,t} mask_nt x_nt x_ntᵀ`` for x [N, T, D], mask [N, T] (bool/float) or None. Returns [D, D]."""
    N, T, D = x.shape
    rows = x.reshape(N * T, D)  # a view when x's strides allow it, else one copy
    weight = None if mask is None else mask.reshape(N * T).to(torch.float32)
    out = alloc.empty((D, D), torch.float32, x.device)
    return bmm(rows.T, rows, weight=weight, out=out)


def kron_apply(V: torch.Tensor, QA: torch.Tensor, QS: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``QS (scale ∘ (QSᵀ V_q QA)) QAᵀ`` for V [Q, O, I], QA [I, I], QS [O, O], scale [O, I]."""
    Q, O, I = V.shape
    out = alloc.empty((Q, O, I), torch.float32, V.device)
    if out.numel() == 0:
        return out
    QA_b, QS_b = QA.expand(Q, I, I), QS.expand(Q, O, O)
    U = bmm(V, QA_b)
    W = bmm(QS_b.transpose(1, 2), U, scale=scale)
    Z = bmm(W, QA_b.transpose(1, 2), out=U)  # U is dead: reuse its memory
    return bmm(QS_b, Z, out=out)
