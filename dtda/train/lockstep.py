"""Training a group of seeds in lockstep: the K members of one recipe advance as one computation.

A small model's training step is per-call overhead, not arithmetic, so K members trained together
cost little more than one. :class:`GroupStep` is Φ_t for K members at once on stacked states
(every parameter and optimiser slot name -> [K, *shape]): the forward and backward pass of a
Linear chain by batched matmuls (:func:`dtda.train.chain.forward_backward`) and the optimiser's
elementwise update on the stacks. Each member keeps its own initialisation (its ``init`` stream),
batch order (``batches`` stream), dropout masks (``dropout`` stream, drawn per member and step)
and optimiser state; it is saved as its own file and records its group (``Record.group``).

Exactness: a member's numbers equal its one-at-a-time training to rounding (the sums run in
another order); a member's slice never reads another slot's values, so the same group (the same
K and slot) reproduces them bit for bit. :class:`Replayer` recomputes a member's states the way
it was trained: its group's step with the group's other members in their slots (or, where they
are absent, copies standing in for them), or the one-member :class:`Step` for a member trained
alone.

Two batched steps (:func:`group_step` picks one, the same way for training and replay): Linear
chains run :class:`GroupStep` (hand-written batched matmuls, no autograd); any other model runs
:class:`VmapGroupStep`, ``torch.func.vmap`` of the one-member step's ``functional_call`` gradient
over the stacked parameters, when vmap takes it. What neither takes (a model that draws dropout
masks outside a Linear chain: each member's own dropout stream cannot be drawn inside vmap;
members whose buffers differ; an operation vmap refuses) trains one at a time, with a
:class:`LockstepFallback` warning naming why.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.func import jvp, vmap

from dtda.train import chain, checks
from dtda.train.data import Data, as_data
from dtda.train.member import _in_module_order, check_weights, fingerprint, replay, train_member
from dtda.train.optim import Params, State
from dtda.train.recipe import Recipe
from dtda.train.record import Member, Record, load_member, save_member
from dtda.train.seeds import check_seeds, stream_seed
from dtda.train.step import Step


class LockstepFallback(UserWarning):
    """A group of seeds is trained one at a time because the batched path cannot take its model."""


def stack(dicts: Sequence[dict]) -> dict:
    """name -> [K, *shape] from K dicts name -> [*shape] (nested one level for optimiser states)."""
    first = dicts[0]
    if first and isinstance(next(iter(first.values())), dict):
        return {slot: stack([d[slot] for d in dicts]) for slot in first}
    return {k: torch.stack([d[k] for d in dicts]) for k in first}


def unstack(stacked: dict, k: int) -> dict:
    """Slot k of :func:`stack`'s result (views)."""
    return {name: unstack(v, k) if isinstance(v, dict) else v[k] for name, v in stacked.items()}


def unstack_all(stacked: dict, K: int) -> list[dict]:
    """Every slot of :func:`stack`'s result with K slots, ``[unstack(stacked, k) for k in range(K)]``
    in one ``unbind`` per tensor (views)."""
    out: list[dict] = [{} for _ in range(K)]
    for name, v in stacked.items():
        for slot, part in zip(out, unstack_all(v, K) if isinstance(v, dict) else v.unbind(0)):
            slot[name] = part
    return out


def _chain_plan(recipe: Recipe, data: Data) -> tuple[list[chain.Node] | None, str]:
    """(the Linear chain :class:`GroupStep` runs, or None with the reason it cannot)."""
    if data.X.dim() != 2:
        return None, f"inputs have shape {tuple(data.X.shape[1:])} per example, not a feature vector"
    module = recipe.build(0)
    return chain.plan_or_reason(module, [k for k, _ in module.named_parameters()], recipe.loss_name)


def group_step(recipe: Recipe, data: Data, seeds: Sequence[int], T: int):
    """(the batched step that trains and replays the group ``seeds`` — a :class:`GroupStep` for a
    Linear chain, else a :class:`VmapGroupStep` — or None, and then a phrase saying why neither
    takes the model). Deterministic in (recipe, data, seeds), so a replay picks what training did."""
    nodes, why_chain = _chain_plan(recipe, data)
    if nodes is not None:
        return GroupStep(recipe, nodes, seeds, T), ""
    step, why = VmapGroupStep.plan(recipe, data, seeds, T)
    return step, (f"{why_chain}, and {why}" if step is None else "")


class GroupStep:
    """Φ_t for the members ``seeds`` of ``recipe`` in lockstep, on stacked states.

    ``step(params, state, x [K, B, I], y [K, B, ...], w [K, B], t)`` -> (params', state',
    per-example losses [K, B]); ``step.forward_backward(...)`` is the :class:`chain.Pass` at θ_t.
    """

    def __init__(self, recipe: Recipe, nodes: list[chain.Node], seeds: Sequence[int], T: int):
        self.recipe, self.nodes, self.seeds, self.T = recipe, nodes, list(seeds), T
        self.stochastic = any(isinstance(n, chain.Dropout) for n in nodes)
        self.decay = chain.decay(recipe.optimizer)

    def lr(self, t: int) -> float:
        return self.recipe.lr(t, self.T)

    def generators(self, t: int) -> list[torch.Generator] | None:
        """Each member's generator for step t's dropout masks (its ``dropout`` stream)."""
        if not self.stochastic:
            return None
        return [torch.Generator().manual_seed(stream_seed(s, "dropout", t)) for s in self.seeds]

    def forward_backward(self, params: Params, x: Tensor, y: Tensor, w: Tensor, t: int) -> chain.Pass:
        return chain.forward_backward(self.nodes, params, x, y, w, self.recipe.loss_name, self.decay,
                                      self.generators(t))

    def advance(self, params: Params, state: State, x: Tensor, y: Tensor, w: Tensor, t: int):
        """Φ_t and the pass it took: (params', state', the :class:`chain.Pass` at θ_t)."""
        fb = self.forward_backward(params, x, y, w, t)
        new_params, new_state = self.recipe.optimizer.update(params, state, fb.grads, self.lr(t), t)
        return new_params, new_state, fb

    def __call__(self, params: Params, state: State, x: Tensor, y: Tensor, w: Tensor, t: int):
        new_params, new_state, fb = self.advance(params, state, x, y, w, t)
        return new_params, new_state, fb.losses

    def tangent(self, params: Params, state: State, x: Tensor, y: Tensor, w: Tensor, t: int, tangents: tuple):
        """The tangent (θ', state') of Φ_t at (params, state, w) along ``tangents`` = (θ, state,
        w) tangents, all stacked [K, ...]: one ``jvp`` of the batched step."""
        def phi(p, s, wb):
            p2, s2, _ = self(p, s, x, y, wb, t)
            return p2, s2
        return jvp(phi, (params, state, w), tangents)[1]


class VmapGroupStep:
    """Φ_t for the members ``seeds`` of any model ``torch.func.vmap`` takes, on stacked states:
    the one-member :class:`Step`'s gradient (``functional_call`` + ``torch.func.grad``) vmapped
    over the K members' parameters [K, *shape] and batches x [K, B, ...], y [K, B, ...], w [K, B],
    then the optimiser's elementwise update on the stacks. Same call as :class:`GroupStep`.
    The members share the architecture and buffers (checked by :meth:`plan`)."""

    def __init__(self, recipe: Recipe, module: torch.nn.Module, seeds: Sequence[int], T: int):
        self.recipe, self.seeds, self.T = recipe, list(seeds), T
        self.step = Step(recipe, module, self.seeds[0], T)
        self._gradient = vmap(self.step.gradient, in_dims=(0, 0, 0, 0, None))
        self._objective = vmap(self.step.objective, in_dims=(0, 0, 0, 0, None))

    @classmethod
    def plan(cls, recipe: Recipe, data: Data, seeds: Sequence[int], T: int):
        """(a :class:`VmapGroupStep` for ``seeds``, or None and a phrase saying why not). Probes one
        step of two stacked copies of the first member on the first batch: what vmap refuses
        (e.g. in-place writes into a vmapped input, ``.item()``, data-dependent control flow)
        raises there, before any training."""
        modules = [recipe.build(s) for s in seeds]
        if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in modules[0].modules()):
            return None, "vmap cannot draw each member's own dropout masks (the model has Dropout)"
        buffers = [dict(m.named_buffers()) for m in modules]
        if any(not torch.equal(b[k], buffers[0][k]) for b in buffers[1:] for k in buffers[0]):
            return None, "the members' buffers differ between seeds (vmap shares one set)"
        step = cls(recipe, modules[0], seeds, T)
        params = stack([{k: p.detach() for k, p in modules[0].named_parameters()}] * 2)
        b = min(recipe.batch_size, len(data))
        x, y = data.X[:b].expand(2, *data.X[:b].shape), data.y[:b].expand(2, *data.y[:b].shape)
        try:
            step(params, recipe.optimizer.init(params), x, y, torch.ones(2, b, dtype=recipe.dtype), 0)
        except Exception as e:  # noqa: BLE001 — whatever vmap refuses becomes the fallback's reason
            first = (str(e).strip().splitlines() or [""])[0][:160]
            return None, f"vmap refuses the model ({type(e).__name__}: {first})"
        return step, ""

    def lr(self, t: int) -> float:
        return self.recipe.lr(t, self.T)

    def objective(self, params: Params, x: Tensor, y: Tensor, w: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """(each member's L_t [K], per-example losses [K, B]); differentiable (eager autograd)."""
        return self._objective(params, x, y, w, t)

    def __call__(self, params: Params, state: State, x: Tensor, y: Tensor, w: Tensor, t: int):
        grads, losses = self._gradient(params, x, y, w, t)
        new_params, new_state = self.recipe.optimizer.update(params, state, grads, self.lr(t), t)
        return new_params, new_state, losses

    def advance(self, params: Params, state: State, x: Tensor, y: Tensor, w: Tensor, t: int):
        """As :meth:`GroupStep.advance`; there is no hand-written pass to keep, so it is None."""
        new_params, new_state, _ = self(params, state, x, y, w, t)
        return new_params, new_state, None

    def tangent(self, params: Params, state: State, x: Tensor, y: Tensor, w: Tensor, t: int, tangents: tuple):
        """As :meth:`GroupStep.tangent`, as vmap over the members of the one-member step's ``jvp``
        (the other order, jvp of the vmapped gradient, gives a wrong tangent for LayerNorm's
        weight in torch 2.13)."""
        def member(p, s, xk, yk, wk, tp, ts, tw):
            def phi(p, s, wb):
                p2, s2, _ = self.step.phi(p, s, xk, yk, wb, t)
                return p2, s2
            return jvp(phi, (p, s, wk), (tp, ts, tw))[1]
        return vmap(member)(params, state, x, y, w, *tangents)


def _train_lockstep(recipe: Recipe, data: Data, seeds: list[int], weights: Tensor | None,
                    step) -> list[Member | FloatingPointError]:
    n = len(data)
    T, C = recipe.num_steps(n), recipe.every(n)
    inits = [dict(recipe.build(s).named_parameters()) for s in seeds]
    params = stack([{k: p.detach() for k, p in init.items()} for init in inits])
    state = recipe.optimizer.init(params)
    batches = [recipe.batches(n, s) for s in seeds]
    w_all = torch.ones(n, dtype=recipe.dtype) if weights is None else weights
    checkpoints = {0: (params, state)}
    errors: dict[int, FloatingPointError] = {}
    watches = [checks.LossWatch(s, T, recipe.optimizer.lr) for s in seeds]  # as train_member's
    for t in range(T):
        idx = torch.stack([b[t] for b in batches])  # [K, B_t]: every member's batch has the same size
        params, state, losses = step(params, state, data.X[idx], data.y[idx], w_all[idx], t)
        checks.LossWatch.step_group(watches, t, idx, losses, errors)
        if (t + 1) % C == 0 or t + 1 == T:
            checkpoints[t + 1] = (params, state)
    for k in [k for k in range(len(seeds)) if k not in errors]:
        try:
            watches[k].finish()
        except checks.TrainingDiverged as e:
            errors[k] = e
    group = tuple(seeds)
    return [errors[k] if k in errors else
            Member(s, Record(batches[k], {t: (unstack(p, k), unstack(st, k)) for t, (p, st) in checkpoints.items()},
                             weights, C, group))
            for k, s in enumerate(seeds)]


def train_group_results(recipe: Recipe, data, seeds, store=None, weights=None) -> list[Member | FloatingPointError]:
    """Members ``seeds`` trained as one group (or loaded from ``store``): a :class:`Member` per seed,
    or the ``FloatingPointError`` of a seed whose loss became non-finite (the others go on).

    With ``store``: a group whose members are all stored is loaded; otherwise the whole group is
    trained (deterministically, so stored members come out the same) and the missing ones saved.
    """
    data = as_data(data, recipe.dtype, recipe.loss_name)
    seeds = check_seeds(seeds)
    weights = check_weights(weights, len(data), recipe.dtype)
    module = recipe.build(seeds[0])
    checks.first_batch(module, data.X, data.y, recipe.loss_name, recipe.batch_size)
    names = [k for k, _ in module.named_parameters()]
    fp = fingerprint(recipe, module, data, weights)
    stored = [load_member(store, s, fp) if store is not None else None for s in seeds]
    if all(m is not None for m in stored):
        return [_in_module_order(m, names) for m in stored]
    step, why = group_step(recipe, data, seeds, recipe.num_steps(len(data))) if len(seeds) > 1 else (None, "")
    if step is None:
        if why:
            warnings.warn(f"seeds {seeds} train one at a time: {why}", LockstepFallback, stacklevel=2)
        return [_one(recipe, data, s, store, weights) for s in seeds]
    results = _train_lockstep(recipe, data, seeds, weights, step)
    out = []
    for result, kept in zip(results, stored):
        if kept is not None:
            result = _in_module_order(kept, names)
        elif store is not None and isinstance(result, Member):
            save_member(store, result, fp)
        out.append(result)
    return out


def _one(recipe, data, seed, store, weights) -> Member | FloatingPointError:
    try:
        return train_member(recipe, data, seed, store, weights)
    except FloatingPointError as e:
        return e


def train_group(recipe: Recipe, data, seeds, store=None, weights=None) -> list[Member]:
    """Members ``seeds`` trained in lockstep as one group (:func:`train_group_results`); raises the
    first seed's ``FloatingPointError`` if a loss became non-finite."""
    results = train_group_results(recipe, data, seeds, store, weights)
    for r in results:
        if isinstance(r, FloatingPointError):
            raise r
    return results


def groups_of(seeds: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """``seeds`` in consecutive groups of ``size`` (the last may be smaller)."""
    seeds = list(seeds)
    return [tuple(seeds[i:i + size]) for i in range(0, len(seeds), size)]


#: Parameters per member below which grouping pays (a step is overhead-bound), and the cap on K.
GROUP_PARAMS = 2**22
MAX_GROUP = 16


def default_group_size(n_params: int, n_seeds: int, workers: int = 1, memory: int | None = None) -> int:
    """Seeds per group: as many as split ``n_seeds`` evenly over ``workers`` parallel workers, at most
    :data:`MAX_GROUP`, at most ``GROUP_PARAMS / n_params`` (larger models' steps are arithmetic, so
    grouping gains little), and such that K members' reverse sweep (≈ 64 parameter-sized float64
    buffers each: Q adjoints, optimiser slots, a checkpoint segment with its gradients) fits in 1/4
    of ``memory`` (bytes; default: this machine's physical memory)."""
    if memory is None:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    by_memory = memory // 4 // (64 * 8 * max(n_params, 1))
    return max(1, min(MAX_GROUP, GROUP_PARAMS // max(n_params, 1), by_memory,
                      math.ceil(n_seeds / max(workers, 1))))


class Replayer:
    """Recomputes the states of K members, stacked, exactly as they were trained.

    ``members`` share the recipe and data; either all were trained alone (each is replayed by its
    own :class:`Step`, and the states are stacked), or all belong to one group G (given in slot
    order, ``None`` for a member of G that is not at hand: a copy of a present one stands in).
    """

    def __init__(self, recipe: Recipe, data: Data, members: Sequence[Member | None]):
        present = next(m for m in members if m is not None)
        self.recipe, self.data = recipe, data
        self.slots = [m if m is not None else present for m in members]
        rec = present.record
        self.weights = present.weights(len(data), recipe.dtype)
        self.T, self.marks = rec.steps, sorted(rec.checkpoints)
        if rec.group is not None:
            self.group_step, why = group_step(recipe, data, rec.group, self.T)
            if self.group_step is None:
                raise ValueError(f"member {present.seed} was trained in group {rec.group}, but {why}")
            self.steps = None
        else:
            self.group_step = None
            self.steps = [Step(recipe, recipe.build(m.seed), m.seed, self.T) for m in self.slots]

    def batch(self, t: int) -> Tensor:
        """Every slot's batch indices at step t [K, B_t]."""
        return torch.stack([m.record.batches[t] for m in self.slots])

    def segment(self, start: int, stop: int) -> list[tuple[Params, State, chain.Pass | None]]:
        """Stacked states s_start .. s_{stop−1} (``start`` a checkpoint step), each with the
        :class:`chain.Pass` at θ_t that replaying step t took (``advance`` of a :class:`GroupStep`,
        for t < stop − 1), else None: the ``mlp`` route of reverse mode needs that pass again."""
        if self.group_step is None:
            per = [replay(step, self.data, m, start, stop, self.weights) for step, m in zip(self.steps, self.slots)]
            return [(stack([p for p, _ in states]), stack([s for _, s in states]), None) for states in zip(*per)]
        params = stack([m.record.checkpoints[start][0] for m in self.slots])
        state = stack([m.record.checkpoints[start][1] for m in self.slots])
        out = []
        for t in range(start, stop - 1):
            idx = self.batch(t)
            new_params, new_state, fb = self.group_step.advance(params, state, self.data.X[idx], self.data.y[idx],
                                                                self.weights[idx], t)
            out.append((params, state, fb))
            params, state = new_params, new_state
        return out + [(params, state, None)]


def sweeps(members: Sequence[Member]) -> list[list[Member | None]]:
    """``members`` split into what :class:`Replayer` takes: one list per training group (in slot
    order, None for a member of the group not in ``members``), and one of every member trained
    alone."""
    alone = [m for m in members if m.record.group is None]
    by_group: dict[tuple[int, ...], dict[int, Member]] = {}
    for m in members:
        if m.record.group is not None:
            by_group.setdefault(m.record.group, {})[m.seed] = m
    out = [[got.get(s) for s in group] for group, got in by_group.items()]
    return out + ([alone] if alone else [])
