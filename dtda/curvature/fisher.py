"""Pseudo-gradients for curvature (PAPER §6.1) and the diagonal Fisher.

The curvature of the loss in the outputs z is estimated from one sampled target ŷ per input:
back-propagating ℓ(z, ŷ) gives pseudo-gradients g̃ with E[g̃_z g̃_zᵀ] = ∇²_z ℓ, so the Fisher
F = (1/N) Σ_n vec G̃_n vec G̃_nᵀ is an unbiased estimate of the GGN.

- ``"true"`` with cross-entropy: ŷ ~ softmax(z) (so g̃_z = softmax(z) − onehot(ŷ)).
- ``"true"`` with mse, ℓ = (1/D) Σ_d (z_d − y_d)²: ŷ = z + √(D/2) ε, ε ~ N(0, I), so
  g̃_z = −√(2/D) ε and E[g̃_z g̃_zᵀ] = (2/D) I = ∇²_z ℓ.
- ``"empirical"``: ŷ = the true labels (the empirical Fisher), for any loss.

Sampling draws from a ``torch.Generator`` seeded by the caller, re-seeded at the start of every
pass over the data, so every pass (covariances, eigenvalue correction) sees the same targets and
reruns are bit-identical.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dtda.curvature.capture import Captured, Layer, Params, capture

KINDS = ("true", "empirical")
TRUE_LOSSES = ("cross_entropy", "mse")


def check_fisher(fisher, loss_name: str | None) -> str:
    """``fisher`` validated against the loss (``loss_name`` None: a custom callable loss)."""
    if fisher not in KINDS:
        raise ValueError(f"fisher must be one of {KINDS}, got {fisher!r}")
    if fisher == "true" and loss_name not in TRUE_LOSSES:
        raise ValueError("fisher='true' samples targets from the model, which needs loss 'cross_entropy' "
                         "or 'mse'; this recipe's loss is a custom callable. Use fisher='empirical' "
                         "(the true labels)")
    return fisher


def sampled_loss(outputs: Tensor, loss_name: str, generator: torch.Generator) -> Tensor:
    """Per-example loss ℓ(z, ŷ) [B] with targets ŷ sampled from the model (kind "true")."""
    z = outputs.detach()
    if loss_name == "cross_entropy":
        if z.dim() != 2:
            raise ValueError(f"fisher='true' with cross_entropy needs logits [B, C], got {tuple(z.shape)}")
        probs = torch.softmax(z.to(torch.float64), dim=1)
        target = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return F.cross_entropy(outputs, target, reduction="none")
    D = z[0].numel()
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    target = z + math.sqrt(D / 2.0) * noise
    return (outputs - target).square().reshape(z.shape[0], -1).mean(1)


def pass_losses(kind: str, loss_fn: Callable, loss_name: str | None, seed: int,
                device: torch.device | str = "cpu") -> Callable[[Tensor, Tensor], Tensor]:
    """A fresh ``(outputs, y) -> ℓ [B]`` for one pass over the data: true labels ("empirical") or
    targets sampled from a generator seeded with ``seed`` ("true")."""
    if kind == "empirical":
        return loss_fn
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return lambda outputs, y: sampled_loss(outputs, loss_name, generator)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of [0, n) of at most ``batch_size``."""
    for lo in range(0, n, batch_size):
        yield slice(lo, min(lo + batch_size, n))


def pseudo_factors(module: nn.Module, params: Params, buffers: dict, layers: list[Layer], X: Tensor,
                   y: Tensor, kind: str, loss_fn: Callable, loss_name: str | None, seed: int,
                   batch_size: int) -> Iterator[Captured]:
    """One pass over (X, y) in batches (module in eval mode): each batch's captured factors with
    pseudo-gradients of ``kind``."""
    losses = pass_losses(kind, loss_fn, loss_name, seed, X.device)
    was_training = module.training
    module.eval()
    try:
        for part in batches(X.shape[0], batch_size):
            yb = y[part]
            yield capture(module, params, buffers, layers, X[part], lambda out, yb=yb: losses(out, yb))
    finally:
        module.train(was_training)


def per_example_gradients(a: Tensor, g: Tensor) -> Tensor:
    """G_n = Σ_t g_nt a_ntᵀ for one batch: [B, O, I] (a per-batch buffer only)."""
    return torch.einsum("bto,bti->boi", g, a)


def diagonal(module: nn.Module, params: Params, buffers: dict, layers: list[Layer], X: Tensor, y: Tensor,
             kind: str, loss_fn: Callable, loss_name: str | None, seed: int, batch_size: int) -> Params:
    """The diagonal Fisher diag F = (1/N) Σ_n G̃_n^∘2 per covered parameter (name -> shape), float64."""
    sums = [None] * len(layers)
    for cap in pseudo_factors(module, params, buffers, layers, X, y, kind, loss_fn, loss_name, seed,
                              batch_size):
        for i, (a, g) in enumerate(zip(cap.a, cap.g)):
            a, g = a.to(torch.float64), g.to(torch.float64)
            if a.shape[1] == 1:  # G_n = g_n ā_nᵀ, so Σ_n G_n^∘2 = (g^∘2)ᵀ ā^∘2: one GEMM
                sq = g[:, 0].square().T @ a[:, 0].square()
            else:
                sq = per_example_gradients(a, g).square().sum(0)
            sums[i] = sq if sums[i] is None else sums[i].add_(sq)
    out: Params = {}
    for layer, total in zip(layers, sums):
        out.update({k: v.squeeze(0) for k, v in layer.split((total / X.shape[0]).unsqueeze(0)).items()})
    return out
