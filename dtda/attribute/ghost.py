"""One step's eager graph (:func:`capture`: d = ∇_θL_t, batched HVPs, Linear-layer factors) and
per-example scores uᵀ∇ℓ_n for a whole batch from those factors (``dtda.ops.ghost_dot``).

For a Linear layer y = W a + b, ∇_W ℓ_n = Σ_t g_nt a_ntᵀ and ∇_b ℓ_n = Σ_t g_nt, with a_nt the
layer input and g_nt = ∂ℓ_n/∂y_nt. So for Q directions u_q = (U_q^W, U_q^b),
uᵀ∇ℓ_n = Σ_layers Σ_t g_ntᵀ [U_q^W, U_q^b] [a_nt; 1] = ghost_dot([a, 1], g, [U^W, U^b]),
without forming per-example gradients. A layer called several times (weight sharing) contributes
its calls as extra positions t. Eligible only when every parameter is a Linear weight or bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dtda.curvature.capture import Layer, factors_of, recording
from dtda.curvature.capture import scores as capture_scores
from dtda.train.optim import Params
from dtda.train.step import Step


def linear_layers(module: nn.Module, names) -> list[Layer] | None:
    """The Linear layers holding every parameter in ``names``, or None if any is elsewhere."""
    layers, covered = [], set()
    for prefix, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            pre = f"{prefix}." if prefix else ""
            layer = Layer(prefix, sub, pre + "weight", pre + "bias" if sub.bias is not None else None)
            if any(p not in names for p in layer.parameters):
                return None  # tied or frozen parameters: let the generic route handle them
            layers.append(layer)
            covered.update(layer.parameters)
    return layers if covered == set(names) and layers else None


@dataclass
class Factors:
    """One step's eager graph: the leaves θ (and w_B if asked), the gradient d = ∇_θL_t
    (differentiable: create_graph) and, per layer, a [B, T, I(+1)] and g [B, T, O]."""

    leaves: Params
    weights: Tensor | None
    grads: Params
    a: list[Tensor]
    g: list[Tensor]

    def hvp(self, u: Params, chunk_size: int | None = None) -> tuple[Params, Tensor | None]:
        """For Q directions u (name -> [Q, *shape]), one batched double backward of
        σ_q = u_qᵀ∇_θL_t gives H_t u_q = ∇_θσ_q and, if the weights are a leaf,
        ∇_wσ_q = (u_qᵀ∇ℓ_n / |B_t|)_n [Q, B]. Returns (H u, that or None)."""
        names = list(self.leaves)
        outs = [k for k in names if self.grads[k].requires_grad]
        wrt = [self.leaves[k] for k in names] + ([self.weights] if self.weights is not None else [])
        q = next(iter(u.values())).shape[0]
        chunk = chunk_size or q
        parts = []
        for lo in range(0, q, chunk):
            u_part = {k: v[lo:lo + chunk] for k, v in u.items()}
            got = torch.autograd.grad([self.grads[k] for k in outs], wrt,
                                      grad_outputs=[u_part[k] for k in outs],
                                      retain_graph=True, allow_unused=True, is_grads_batched=True)
            zeros = [torch.zeros_like(u_part[k]) for k in names]
            if self.weights is not None:
                zeros.append(self.weights.new_zeros((u_part[names[0]].shape[0],) + self.weights.shape))
            parts.append([z if h is None else h for z, h in zip(zeros, got)])
        cols = [torch.cat(c) if len(c) > 1 else c[0] for c in zip(*parts)]
        hu = dict(zip(names, cols))
        return hu, (cols[-1] if self.weights is not None else None)


def capture(step: Step, layers: list[Layer], params: Params, x: Tensor, y: Tensor,
            w: Tensor, t: int, weights_leaf: bool = False) -> Factors:
    """One eager forward, then d = ∇_θL_t with its graph and, for each of ``layers`` (may be
    empty), its (a, g) with g_nt = ∂ℓ_n/∂y_nt (unweighted). ``weights_leaf`` makes w_B a leaf
    of the graph (for :meth:`Factors.hvp`'s weight cotangents)."""
    with torch.enable_grad(), recording(layers) as calls:
        leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
        weights = w.detach().requires_grad_() if weights_leaf else None
        total, losses = step.objective(leaves, x, y, weights if weights_leaf else w, t)
        outs = [out for layer_calls in calls for _, out in layer_calls]
        gs = (torch.autograd.grad(losses.sum(), outs, retain_graph=True, allow_unused=True)
              if outs else ())
        grads = dict(zip(leaves, torch.autograd.grad(total, list(leaves.values()), create_graph=True)))
    a, g = factors_of(layers, calls, gs, x.shape[0], params)
    return Factors(leaves, weights, grads, a, g)


def scores(layers: list[Layer], factors: Factors, u: Params) -> Tensor:
    """S[n, q] = u_qᵀ∇ℓ_n for the captured batch; u: name -> [Q, *shape]. Returns [B, Q]."""
    return capture_scores(layers, factors.a, factors.g, u)
