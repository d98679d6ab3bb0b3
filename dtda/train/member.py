"""Training one ensemble member, and replaying its run from checkpoints."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from dtda.train import checks
from dtda.train.data import Data, as_data
from dtda.train.optim import Params, State
from dtda.train.record import Member, Record, load_member, save_member
from dtda.train.recipe import Recipe
from dtda.train.step import Step


def fingerprint(recipe: Recipe, module: nn.Module, data: Data, weights: Tensor | None) -> str:
    """A hash of the recipe description, the parameter names and shapes, the data and the
    weights (guards stored members; the factory's code itself is not hashed)."""
    shapes = [(k, list(p.shape)) for k, p in module.named_parameters()]
    h = hashlib.sha256(json.dumps([recipe.describe(), shapes], sort_keys=True).encode())
    for t in (data.X, data.y) + ((weights,) if weights is not None else ()):
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def check_weights(weights, n: int, dtype: torch.dtype) -> Tensor | None:
    if weights is None:
        return None
    w = torch.as_tensor(weights)
    if w.shape != (n,) or not (torch.is_floating_point(w) or w.dtype in (torch.int64, torch.int32, torch.bool)):
        raise ValueError(f"weights must be a numeric tensor of shape [{n}] (one per training example), "
                         f"got {w.dtype} of shape {tuple(w.shape)}")
    w = w.to(dtype)
    if not torch.isfinite(w).all():
        raise ValueError("weights must be finite")
    return w


def train_member(recipe: Recipe, data, seed: int, store: str | Path | None = None,
                 weights: Tensor | None = None) -> Member:
    """Train member ``seed`` (or load it from ``store`` if stored there for the same fingerprint).

    data: an ``(X, y)`` pair, a map-style Dataset or :class:`Data`. weights: per-example weights
    [N] (masked removal: a removed example has weight 0, batches and |B_t| are unchanged).
    Bad data raises ValueError before training (:mod:`dtda.train.checks`). Raises
    ``FloatingPointError`` naming the seed, step and examples if a loss is not finite, and its
    subclass :class:`~dtda.train.checks.TrainingDiverged` if training diverged.
    """
    data = as_data(data, recipe.dtype, recipe.loss_name)
    n = len(data)
    weights = check_weights(weights, n, recipe.dtype)
    module = recipe.build(seed)
    checks.first_batch(module, data.X, data.y, recipe.loss_name, recipe.batch_size)
    fp = fingerprint(recipe, module, data, weights)
    if store is not None:
        stored = load_member(store, seed, fp)
        if stored is not None:
            return _in_module_order(stored, [k for k, _ in module.named_parameters()])
    params = {k: p.detach().clone() for k, p in module.named_parameters()}
    state = recipe.optimizer.init(params)
    T, C = recipe.num_steps(n), recipe.every(n)
    step = Step(recipe, module, seed, T)
    batches = recipe.batches(n, seed)
    w_all = torch.ones(n, dtype=recipe.dtype) if weights is None else weights
    checkpoints = {0: (params, state)}
    watch = checks.LossWatch(seed, T, recipe.optimizer.lr)
    for t, idx in enumerate(batches):
        params, state, losses = step(params, state, data.X[idx], data.y[idx], w_all[idx], t)
        watch.step(t, idx, losses)
        if (t + 1) % C == 0 or t + 1 == T:
            checkpoints[t + 1] = (params, state)
    watch.finish()
    member = Member(seed, Record(batches, checkpoints, weights, C))
    if store is not None:
        save_member(store, member, fp)
    return member


def _in_module_order(member: Member, names: list[str]) -> Member:
    """Reorder a loaded member's parameter dicts as the module lists them (sums run in that order)."""
    def order(d):
        return {k: d[k] for k in names}
    rec = member.record
    rec.checkpoints = {t: (order(p), {slot: order(v) for slot, v in sorted(s.items())})
                       for t, (p, s) in sorted(rec.checkpoints.items())}
    return member


def replay(step: Step, data: Data, member: Member, start: int, stop: int,
           weights: Tensor) -> list[tuple[Params, State]]:
    """States s_start .. s_{stop−1}, recomputed from the checkpoint at ``start``.

    ``start`` must be a checkpoint step. The replay runs the training step itself, so on CPU the
    states equal the training run's bit for bit.
    """
    record = member.record
    if start not in record.checkpoints:
        raise ValueError(f"replay: step {start} is not a checkpoint (have {sorted(record.checkpoints)})")
    params, state = record.checkpoints[start]
    states = []
    for t in range(start, stop):
        states.append((params, state))
        if t + 1 < stop:
            idx = record.batches[t]
            params, state, _ = step(params, state, data.X[idx], data.y[idx], weights[idx], t)
    return states


def module_for(recipe: Recipe, member: Member) -> nn.Module:
    """Member's architecture (a fresh module from its init stream), for functional calls."""
    return recipe.build(member.seed)


def load_trained(recipe: Recipe, member: Member) -> nn.Module:
    """Member's trained module, in eval mode."""
    module = module_for(recipe, member)
    with torch.no_grad():
        named = dict(module.named_parameters())
        for k, p in member.params.items():
            named[k].copy_(p)
    return module.eval()
