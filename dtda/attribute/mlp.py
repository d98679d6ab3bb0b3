"""Exact batched Hessian-vector products and per-example scores for MLPs, derived by hand.

For a network that is a chain (``nn.Sequential``, nested allowed) of ``nn.Linear`` layers,
elementwise activations (:data:`dtda.train.chain.ACTIVATIONS`) and ``nn.Dropout``, trained with the
``"cross_entropy"`` or ``"mse"`` loss, one reverse-mode step (PAPER §3.4) needs, for Q adjoint
directions c_q = (V_q, b_q) (per layer: V [Q, O, I], b [Q, O]):

- H_t c_q, with H_t = ∇²_θ L_t(θ; w) including the regulariser's λI (SGD's weight decay), and
- the per-example scores c_qᵀ∇ℓ_n for n in the batch.

Both come from the forward-mode derivative R(·) := d/dε (·)(θ + εc) of the forward pass and of
the backward pass (Pearlmutter's R-operator), batched over the Q directions as matmuls with Q·B
rows. Per Linear layer z = h Wᵀ + b with input h [B, I] and output gradient δ = ∂L_t/∂z [B, O]:

    R(z)  = R(h) Wᵀ + h Vᵀ + b_c                      (R-forward; R(x) = 0 for the inputs)
    R(δ_h) = R(δ) W + δ V                             (R-backward, δ_h := ∂L_t/∂h)
    (H c)_W = R(δ)ᵀ h + δᵀ R(h),   (H c)_b = Σ_n R(δ)_n

and per elementwise map v = s(u): R(v) = s'(u) R(u), R(δ_u) = s'(u) R(δ_v) + s''(u) R(u) δ_v
(Dropout is s(u) = m ⊙ u with the step's mask m). At the output f [B, C], with weights w_n:
δ_f = (w_n/|B_t|) ℓ'(f_n) and R(δ_f) = (w_n/|B_t|) ∇²ℓ(f_n) R(f_n), where for cross-entropy
∇²ℓ R = p ⊙ R − p (pᵀR) (p = softmax f) and for mse (mean over C) ∇²ℓ = (2/C) I.
The scores are c_qᵀ∇ℓ_n = ℓ'(f_n)ᵀ R(f_n): a by-product of the R-forward, with no per-example
gradients. Work per step: ≈ 6·Q·B·(Linear weights) multiply-adds (two matmuls in each of the
R-forward, R-backward and Hessian accumulation), against ≈ 3·B·(weights) for a training step.

The forward and backward pass itself (:func:`dtda.train.chain.forward_backward`) runs for the K
members of a group at once; the R-passes run per member on its slice.
"""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import Tensor

from dtda.train.chain import Dense, Node, Pass, over_classes, plan  # noqa: F401 (plan: this route's eligibility)
from dtda.train.lockstep import unstack_all
from dtda.train.optim import Params


#: Output widths O below this are "narrow": products with O columns run far below the matmul rate
#: (measured at one thread, Q·B = 1280: [1280, 128] @ [128, 10] at 17 GFLOP/s against 80–90 for
#: O = 128), so the R-forward takes them with O rows instead.
NARROW = 32


def _loss_hvp(loss_name: str, f: Tensor, r: Tensor) -> Tensor:
    """∇²ℓ(f_n) r_qn for f [B, C] and r [Q, B, C]."""
    if loss_name == "cross_entropy":
        p = over_classes(torch.softmax, f)
        return p * (r - (r * p).sum(-1, keepdim=True))
    return (2.0 / f.shape[-1]) * r


def member_passes(fb: Pass) -> list[Pass]:
    """Each member's slice of a K-member :class:`Pass` (views; one ``unbind`` per tensor)."""
    K = fb.out.shape[0]

    def split(value):
        if value is None:
            return [None] * K
        if isinstance(value, list):
            return [list(member) for member in zip(*map(split, value))]
        if isinstance(value, dict):
            return unstack_all(value, K)
        return value.unbind(0)

    return [Pass(*member) for member in zip(*(split(getattr(fb, f.name)) for f in fields(Pass)))]


def hvp_and_scores(nodes: list[Node], loss_name: str, lam: float, params: Params, fb: Pass, c: Params,
                   out: Params, scale: float = 1.0) -> Tensor:
    """For one member (params name -> [*shape], ``fb`` its slice of :func:`member_passes`) and Q directions c
    (name -> [Q, *shape]) adds ``scale``·H_t c_q to ``out`` (name -> [Q, *shape], updated in place)
    and returns the scores S [Q, B], S[q, n] = c_qᵀ∇ℓ_n; λ = ``lam`` is SGD's weight decay.

    R-tensors are [Q, B, width]; every product with a weight is one matmul over all Q·B rows or
    one batched matmul over q, and (H c)_W is accumulated into ``out`` by batched matmuls."""
    first = next(i for i, n in enumerate(nodes) if isinstance(n, Dense))
    q = next(iter(c.values())).shape[0]
    r_in: list[Tensor | None] = [None] * len(nodes)  # R(node input)
    r = None
    for i in range(first, len(nodes)):
        node = nodes[i]
        r_in[i] = r
        if isinstance(node, Dense):
            h, v, weight = fb.inputs[i], c[node.weight], params[node.weight]
            narrow = v.shape[1] < NARROW
            if narrow:  # h Vᵀ [Q, B, O] as V hᵀ: one [Q·O, I] @ [I, B] product, then a transposing copy
                z = torch.mm(v.view(-1, v.shape[-1]), h.T).view(q, v.shape[1], -1).transpose(1, 2).contiguous()
            else:  # Q products [B, I] @ [I, O] straight into [Q, B, O] (no copy)
                z = torch.bmm(h.expand(q, *h.shape), v.transpose(1, 2))
            if r is not None:  # + R(h) Wᵀ; for a narrow W as (W R(h)ᵀ)ᵀ, O rows instead of O columns
                if narrow:
                    z.view(-1, z.shape[-1]).add_(torch.mm(weight, r.view(-1, r.shape[-1]).T).T)
                else:
                    z.view(-1, z.shape[-1]).addmm_(r.view(-1, r.shape[-1]), weight.T)
            if node.bias:
                z += c[node.bias].unsqueeze(1)
            r = z
        elif fb.slopes[i] is not None:
            # r is this function's own tensor: scale it in place (fresh [Q, B, width] tensors
            # cost page faults) unless the curvature term still needs R(u)
            r = r.mul_(fb.slopes[i]) if fb.curvatures[i] is None else r * fb.slopes[i]
    scores = (r * fb.dloss).sum(-1)  # ℓ'(f_n)ᵀ R(f_n)
    rd = _loss_hvp(loss_name, fb.out, r) * fb.scale.unsqueeze(1)  # R(δ_f)
    for i in range(len(nodes) - 1, first - 1, -1):
        node = nodes[i]
        if isinstance(node, Dense):
            h, v, weight, delta = fb.inputs[i], c[node.weight], params[node.weight], fb.deltas[i]
            out[node.weight].baddbmm_(rd.transpose(1, 2), h.expand(q, *h.shape), alpha=scale)  # R(δ)ᵀ h
            if r_in[i] is not None:
                out[node.weight].baddbmm_(delta.T.expand(q, *delta.T.shape), r_in[i], alpha=scale)  # δᵀ R(h)
            if lam:
                out[node.weight].add_(v, alpha=lam * scale)
            if node.bias:
                out[node.bias].add_(rd.sum(1), alpha=scale)
                if lam:
                    out[node.bias].add_(c[node.bias], alpha=lam * scale)
            if i > first:  # R(δ_h) = R(δ) W + δ V, written over R(h): the same shape, not read
                # again, and in cache from δᵀR(h) just now (a fresh block would be fetched cold)
                rd = torch.mm(rd.view(-1, rd.shape[-1]), weight, out=r_in[i].view(-1, weight.shape[1]))
                rd = rd.view(q, -1, weight.shape[1])
                rd.baddbmm_(delta.expand(q, *delta.shape), v)
        else:
            if fb.curvatures[i] is not None:
                term = fb.curvatures[i] * fb.deltas[i] * r_in[i]  # s''(u) R(u) δ_v
            if fb.slopes[i] is not None:
                rd = rd.mul_(fb.slopes[i])
            if fb.curvatures[i] is not None:
                rd = rd.add_(term)
    return scores
