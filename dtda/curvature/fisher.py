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
import warnings
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from dtda.curvature.capture import Captured, Layer, Params, capture, capture_group, recording

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


def pass_generator(kind: str, seed: int, device: torch.device | str = "cpu") -> torch.Generator | None:
    """The generator of one pass's sampled targets, seeded with ``seed`` (kind "true"); None for
    "empirical" (the true labels: nothing to draw)."""
    if kind == "empirical":
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def batch_losses(loss_fn: Callable, loss_name: str | None, generator: torch.Generator | None,
                 y: Tensor) -> Callable[[Tensor], Tensor]:
    """``outputs -> ℓ [B]`` for one batch: with the true labels y (``generator`` None) or with
    targets sampled from ``generator``."""
    if generator is None:
        return lambda outputs: loss_fn(outputs, y)
    return lambda outputs: sampled_loss(outputs, loss_name, generator)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of [0, n) of at most ``batch_size``."""
    for lo in range(0, n, batch_size):
        yield slice(lo, min(lo + batch_size, n))


class GroupFallback(UserWarning):
    """K parameter sets are captured one at a time because vmap refuses the model."""


def group_pseudo_factors(module: nn.Module, params_list: Sequence[Params], buffers: dict, layers: list[Layer],
                         X: Tensor, y: Tensor, kind: str, loss_fn: Callable, loss_name: str | None,
                         seeds: Sequence[int], batch_size: int) -> Iterator[list[Captured]]:
    """One pass over (X, y) in batches (module in eval mode) for K parameter sets together: each
    batch's captured factors per set (:func:`dtda.curvature.capture.capture_group`), set k's
    pseudo-gradients of ``kind`` drawn from its own generator seeded with ``seeds[k]``, in the same
    order as a pass of that set alone. A model vmap refuses is captured set by set from the batch
    where vmap failed, with a :class:`GroupFallback` warning naming why (the generators are
    rewound, so the targets are those of the sets alone)."""
    generators = [pass_generator(kind, seed, X.device) for seed in seeds]
    together = len(params_list) > 1
    was_training = module.training
    module.eval()
    try:
        for part in batches(X.shape[0], batch_size):
            losses_of = [batch_losses(loss_fn, loss_name, gen, y[part]) for gen in generators]
            caps = None
            if together:
                drawn = [gen.get_state() if gen is not None else None for gen in generators]
                try:
                    caps = capture_group(module, params_list, buffers, layers, X[part], losses_of)
                except Exception as e:  # noqa: BLE001 — what vmap refuses; a real error recurs below
                    together = False
                    for gen, state in zip(generators, drawn):  # the sets alone draw the same targets
                        if gen is not None:
                            gen.set_state(state)
                    first = (str(e).strip().splitlines() or [""])[0][:160]
                    warnings.warn(f"curvature: {len(params_list)} parameter sets are captured one at a time: "
                                  f"vmap refuses the model ({type(e).__name__}: {first})", GroupFallback,
                                  stacklevel=2)
            if caps is None:
                caps = [capture(module, params, buffers, layers, X[part], f) for params, f in zip(params_list, losses_of)]
            yield caps
            del caps  # this batch's factors go before the next batch is captured (peak memory)
    finally:
        module.train(was_training)


#: Bytes a pass over K parameter sets together may hold for one batch's captures (see :func:`sets_per_pass`).
PASS_BYTES = 2**30


def sets_per_pass(module: nn.Module, params: Params, buffers: dict, layers: list[Layer], x: Tensor,
                  budget: int | None = None) -> int:
    """How many parameter sets one pass captures together: as many as keep a batch x's factors
    (a and g of every layer call, bias column and Conv2d patches included) and the layer outputs the
    backward keeps, per set, within ``budget`` bytes (default :data:`PASS_BYTES`; at least 1 set).
    From a no-grad forward of ``params`` on x's first row, scaled by x's rows (examples do not
    interact, so every layer call's size is proportional to them)."""
    budget = PASS_BYTES if budget is None else budget
    with torch.no_grad(), recording(layers) as calls:
        functional_call(module, (params, buffers), (x[:1],))
    per_row = 0
    for layer, layer_calls in zip(layers, calls):
        for inp, out in layer_calls:
            a, g = layer.factors(inp, out)
            per_row += (a.numel() + g.numel() + out.numel()) * a.element_size()
    return max(1, budget // max(per_row * x.shape[0], 1))


def grouped_passes(module: nn.Module, params_list: Sequence[Params], buffers: dict, layers: list[Layer],
                   X: Tensor, y: Tensor, kind: str, loss_fn: Callable, loss_name: str | None,
                   seeds: Sequence[int], batch_size: int) -> Iterator[tuple[range, slice, list[Captured]]]:
    """Passes over (X, y) that capture all K parameter sets, as many sets per pass as
    :func:`sets_per_pass` allows (:func:`group_pseudo_factors` per pass): per batch, (the indices
    of the pass's sets, the batch's rows of X, their captures in that order)."""
    K = len(params_list)
    per_pass = sets_per_pass(module, params_list[0], buffers, layers, X[:batch_size]) if K > 1 else 1
    for lo in range(0, K, per_pass):
        chunk = range(lo, min(lo + per_pass, K))
        captured = group_pseudo_factors(module, [params_list[s] for s in chunk], buffers, layers, X, y, kind,
                                        loss_fn, loss_name, [seeds[s] for s in chunk], batch_size)
        parts = batches(X.shape[0], batch_size)
        for caps in captured:  # (not zip: its reused result tuple keeps a batch alive into the next)
            yield chunk, next(parts), caps
            del caps  # before the next batch is captured (peak memory: one batch's captures)


def pseudo_factors(module: nn.Module, params: Params, buffers: dict, layers: list[Layer], X: Tensor,
                   y: Tensor, kind: str, loss_fn: Callable, loss_name: str | None, seed: int,
                   batch_size: int) -> Iterator[Captured]:
    """:func:`group_pseudo_factors` for one parameter set: each batch's captured factors."""
    for (cap,) in group_pseudo_factors(module, [params], buffers, layers, X, y, kind, loss_fn, loss_name,
                                       [seed], batch_size):
        yield cap


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
