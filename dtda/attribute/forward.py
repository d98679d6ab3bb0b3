"""Forward-mode unrolled differentiation (PAPER §3.1–3.3): tangents for removal groups.

For group G the weights move along u = −𝟙_G (with multiplicity). The tangent of the state,
(ρ_t, state tangents) with ρ_0 = 0, follows one ``torch.func.jvp`` of the step Φ_t per step with
tangent (ρ_t, state tangents, u_{B_t}); G groups are vmapped. Memory is constant in T. Outputs:
the parameter shift Δθ(G) = ρ_T and δ(G) = ∇m(θ_T)ᵀρ_T.

With ``order=2`` the second-order tangent σ_t = d²θ_t/dε² along the weights w = 1 + εu is carried
too (forward over forward: one nested ``jvp`` of Φ_t along the path (θ_t + ερ_t + ½ε²σ_t,
w + εu)), giving d²m/dε² = ∇mᵀσ_T + ρ_Tᵀ∇²m ρ_T and the second-order prediction of removal
(ε = 1) m + δ + ½·d²m/dε². Φ_t is linear in w, so the Taylor series in ε is that of the whole
trajectory: for a model linear in θ trained T = 2 steps, m(ε) is a quadratic and the prediction
is exact. Cost: 6–10× the first-order sweep (measured, docs/results.md section 6).

The members of one training group (:mod:`dtda.train.lockstep`) advance together
(:func:`forward_group`): the jvp is of the group's batched step Φ_t on the stacked states, so the
K × G tangents [G, K, ...] move in one sweep per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import jvp, vmap

from dtda.attribute.reverse import measurement_gradient
from dtda.train.data import Data
from dtda.train.lockstep import Replayer, unstack
from dtda.train.optim import Params
from dtda.train.recipe import Recipe
from dtda.train.record import Member
from dtda.train.step import Step


@dataclass
class ForwardResult:
    """m [Q]; delta [G, Q]; dtheta: name -> [G, *shape] (Δθ(G), for the non-linear variant);
    with order 2 also delta2 [G, Q] = d²m/dε² and dtheta2 = d²θ_T/dε² (name -> [G, *shape])."""

    m: Tensor
    delta: Tensor
    dtheta: Params
    delta2: Tensor | None = None
    dtheta2: Params | None = None


def group_directions(groups, n: int, dtype: torch.dtype) -> Tensor:
    """u [G, N] with u_g = −Σ_{k∈G_g} e_k."""
    if not groups:
        raise ValueError("groups must be a non-empty list of lists of example indices")
    u = torch.zeros(len(groups), n, dtype=dtype)
    for g, members in enumerate(groups):
        idx = torch.as_tensor(list(members), dtype=torch.long)
        if idx.numel() and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"groups[{g}]: indices must be in [0, {n}), got {idx.tolist()}")
        u[g].index_add_(0, idx, torch.full((idx.numel(),), -1.0, dtype=dtype))
    return u


def _zero_tangents(params: Params, state: dict, lead: tuple[int, ...]) -> tuple[Params, dict]:
    """Zero tangents ρ_0 of the parameters and the optimiser state, shaped [*lead, *shape]."""
    return ({k: p.new_zeros(lead + p.shape) for k, p in params.items()},
            {slot: {k: v.new_zeros(lead + v.shape) for k, v in vals.items()} for slot, vals in state.items()})


def _delta(m: Tensor, grad_m: Params, rho: Params, G: int) -> Tensor:
    """δ [G, Q] = ∇m(θ_T)ᵀ ρ_T for each of the G groups (ρ: name -> [G, *shape])."""
    return sum(grad_m[k].reshape(m.shape[0], -1) @ rho[k].reshape(G, -1).T for k in rho).T.contiguous()


def along(values: dict, first: dict, second: dict, e: Tensor) -> dict:
    """values + e·first + ½e²·second, for (nested) dicts of tensors: the second-order path in ε."""
    return {k: along(v, first[k], second[k], e) if isinstance(v, dict) else v + e * first[k] + 0.5 * e * e * second[k]
            for k, v in values.items()}


def second_order_jvp(f, at: Tensor):
    """(f'(at), f''(at)) of a function of the scalar ``at`` (forward over forward)."""
    one = torch.ones_like(at)
    return jvp(lambda e: jvp(f, (e,), (one,))[1], (at,), (one,))


def forward(step: Step, data: Data, member: Member, measure, groups,
            chunk_size: int | None = None, order: int = 1) -> ForwardResult:
    """Forward-mode UD of one member for ``groups`` (lists of example indices); ``order`` 2 adds
    the second-order terms (module docstring). The states are replayed as the member was trained
    (:class:`dtda.train.lockstep.Replayer`: in its group's lockstep if it was trained in one)."""
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (Δθ and δ) or 2 (also d²θ/dε² and d²m/dε²), got {order!r}")
    rec = member.record
    n, dtype = len(data), step.recipe.dtype
    weights = member.weights(n, dtype)
    u = group_directions(groups, n, dtype)
    G = u.shape[0]
    group = rec.group
    replayer = Replayer(step.recipe, data, [member if s == member.seed else None for s in group]
                        if group is not None else [member])
    position = group.index(member.seed) if group is not None else 0
    m, grad_m = measurement_gradient(step, measure, member.params)  # before the sweep: checks m
    rho, rho_state = _zero_tangents(*rec.checkpoints[0], (G,))
    if order == 2:
        sigma = {k: torch.zeros_like(v) for k, v in rho.items()}
        sigma_state = {slot: {k: torch.zeros_like(v) for k, v in vals.items()} for slot, vals in rho_state.items()}
    zero = torch.zeros((), dtype=dtype)
    for start, stop in zip(replayer.marks[:-1], replayer.marks[1:]):
        for t, (params, state, _) in enumerate(replayer.segment(start, stop), start):
            params, state = unstack(params, position), unstack(state, position)
            idx = rec.batches[t]
            x, y, w = data.X[idx], data.y[idx], weights[idx]

            def tangent(tp, ts, tw, params=params, state=state, x=x, y=y, w=w, t=t):
                def phi(p, s, wb):
                    p2, s2, _ = step.phi(p, s, x, y, wb, t)
                    return p2, s2
                return jvp(phi, (params, state, w), (tp, ts, tw))[1]

            def tangents(tp, ts, sp, ss, tw, params=params, state=state, x=x, y=y, w=w, t=t):
                def path(e):
                    p2, s2, _ = step.phi(along(params, tp, sp, e), along(state, ts, ss, e), x, y, w + e * tw, t)
                    return p2, s2
                return second_order_jvp(path, zero)

            if order == 1:
                rho, rho_state = vmap(tangent, randomness="same", chunk_size=chunk_size)(rho, rho_state, u[:, idx])
            else:
                (rho, rho_state), (sigma, sigma_state) = vmap(tangents, randomness="same", chunk_size=chunk_size)(
                    rho, rho_state, sigma, sigma_state, u[:, idx])
    delta = _delta(m, grad_m, rho, G)
    if order == 1:
        return ForwardResult(m, delta, rho)

    def curvature(tp, sp):  # d²/dε² m(θ_T + ερ + ½ε²σ) = ∇mᵀσ + ρᵀ∇²mρ
        return second_order_jvp(lambda e: measure.functional(along(member.params, tp, sp, e), step.buffers,
                                                             step.module), zero)[1]
    delta2 = vmap(curvature, chunk_size=chunk_size)(rho, sigma)
    return ForwardResult(m, delta, rho, delta2.detach(), sigma)


def forward_group(recipe: Recipe, data: Data, slots: list[Member | None], measure, groups,
                  chunk_size: int | None = None) -> list[ForwardResult | None]:
    """Forward-mode UD of the members of one training group together, in slot order (``slots`` as
    :class:`dtda.train.lockstep.Replayer` takes them; None for an absent member, whose result is
    None). Per step, one ``jvp`` of the group's batched step (the one it was trained with) at the
    replayed states (:meth:`dtda.train.lockstep.GroupStep.tangent`) carries the tangents of all K
    members for the G groups (vmapped over G): ρ [G, K, *shape], with u_{B_t} [G, K, B]. Members
    trained alone run one at a time (:func:`forward`)."""
    replayer = Replayer(recipe, data, slots)
    if replayer.group_step is None:
        return [forward(Step(recipe, recipe.build(m.seed), m.seed, replayer.T), data, m, measure, groups, chunk_size)
                for m in slots]
    members, step = replayer.slots, replayer.group_step
    u = group_directions(groups, len(data), recipe.dtype)
    G = u.shape[0]
    got = [measurement_gradient(Step(recipe, recipe.build(m.seed), m.seed, replayer.T), measure, m.params)
           for m in members]  # before the sweep: checks m
    rho, rho_state = _zero_tangents(*members[0].record.checkpoints[0], (G, len(members)))
    for start, stop in zip(replayer.marks[:-1], replayer.marks[1:]):
        for t, (params, state, _) in enumerate(replayer.segment(start, stop), start):
            idx = replayer.batch(t)
            x, y, w = data.X[idx], data.y[idx], replayer.weights[idx]

            def tangent(tp, ts, tw, params=params, state=state, x=x, y=y, w=w, t=t):
                return step.tangent(params, state, x, y, w, t, (tp, ts, tw))

            rho, rho_state = vmap(tangent, randomness="same", chunk_size=chunk_size)(rho, rho_state, u[:, idx])
    out: list[ForwardResult | None] = []
    for k, ((m, grad_m), given) in enumerate(zip(got, slots)):
        shift = {name: r[:, k] for name, r in rho.items()}
        out.append(None if given is None else ForwardResult(m, _delta(m, grad_m, shift, G), shift))
    return out
