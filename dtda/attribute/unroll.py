"""``unroll``: per-seed removal effects of an ensemble by unrolled differentiation."""

from __future__ import annotations

import torch
from torch import Tensor

from dtda.attribute.forward import ForwardResult, forward, forward_group
from dtda.attribute.reverse import reverse
from dtda.measure import as_measurement
from dtda.samples import SeedSamples
from dtda.train.data import as_data
from dtda.train.lockstep import default_group_size, groups_of, sweeps
from dtda.train.recipe import Recipe
from dtda.train.record import Member
from dtda.train.step import Step

MODES = ("reverse", "forward")


def _check_groups(groups, n: int) -> list[list[int]] | None:
    if groups is None:
        return None
    out = []
    for g, members in enumerate(groups):
        ids = [int(i) for i in members]
        if not ids or min(ids) < 0 or max(ids) >= n:
            raise ValueError(f"groups[{g}] must be a non-empty list of indices in [0, {n}), got {members!r}")
        out.append(ids)
    if not out:
        raise ValueError("groups must be None or a non-empty list of lists of example indices")
    return out


def _check_mode(mode: str, groups) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "forward" and groups is None:
        raise ValueError("mode='forward' needs groups (lists of example indices); for every "
                         "single example use mode='reverse'")


def _step(recipe: Recipe, member: Member) -> Step:
    return Step(recipe, recipe.build(member.seed), member.seed, member.record.steps)


def _slots(member: Member) -> list[Member | None]:
    """``member`` in its training group's slot (the others absent), or alone."""
    group = member.record.group
    return [member if s == member.seed else None for s in group] if group is not None else [member]


def forward_member(recipe: Recipe, data, member: Member, measure, groups,
                   chunk_size: int | None = None, order: int = 1) -> ForwardResult:
    """Forward-mode UD of one member: m [Q], δ [G, Q] and Δθ(G) (name -> [G, *shape]); with
    ``order=2`` also d²m/dε² [G, Q] and d²θ/dε² along w = 1 − ε𝟙_G (:mod:`dtda.attribute.forward`)."""
    data = as_data(data, recipe.dtype, recipe.loss_name)
    return forward(_step(recipe, member), data, member, as_measurement(measure),
                   _check_groups(groups, len(data)), chunk_size, order)


def unroll_member(recipe: Recipe, data, member: Member, measure, mode: str = "reverse",
                  groups=None, route: str = "auto", chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """One member's (m(θ_T) [Q], δ [N, Q]) — or δ [G, Q] with ``groups``.

    δ(k) = −∂m(θ_T)/∂w_k ≈ m(after removing k) − m(before), with the member's seed fixed.
    mode "reverse" (PAPER §3.4): all N examples at the cost of Q adjoint sweeps, batched; groups
    sum the singles. mode "forward" (§3.1–3.3): needs ``groups``; one tangent per group.
    route: "auto", "ghost", "double-backward" or "generic" (reverse mode; all give the same
    numbers up to rounding; see :mod:`dtda.attribute.reverse`).
    chunk_size: vmap chunk over measurements (reverse) or groups (forward); None = all at once.
    """
    data = as_data(data, recipe.dtype, recipe.loss_name)
    groups = _check_groups(groups, len(data))
    measure = as_measurement(measure)
    _check_mode(mode, groups)
    if mode == "forward":
        result = forward(_step(recipe, member), data, member, measure, groups, chunk_size)
        return result.m, result.delta
    slots = _slots(member)
    m, delta = reverse(recipe, data, slots, measure, route, chunk_size)
    slot = next(k for k, s in enumerate(slots) if s is member)
    return m[slot], _sum_groups(delta[slot], groups)


def _sum_groups(delta: Tensor, groups: list[list[int]] | None) -> Tensor:
    return delta if groups is None else torch.stack([delta[g].sum(0) for g in groups])


def unroll_group(recipe: Recipe, data, members: list[Member], measure, mode: str = "reverse", groups=None,
                 route: str = "auto", chunk_size: int | None = None) -> list[tuple[Tensor, Tensor]]:
    """:func:`unroll_member` for several members, in order. The members of one training group
    (:func:`dtda.train.lockstep.train_group`) are swept together: in reverse mode their K × Q
    adjoints advance in one pass per step (the members trained alone are swept together too), in
    forward mode their K × G tangents (:func:`dtda.attribute.forward.forward_group`); members
    trained alone run forward mode one at a time."""
    data = as_data(data, recipe.dtype, recipe.loss_name)
    groups = _check_groups(groups, len(data))
    _check_mode(mode, groups)
    measure = as_measurement(measure)
    out: dict[int, tuple[Tensor, Tensor]] = {}
    for slots in sweeps(members):
        if mode == "forward":
            for member, r in zip(slots, forward_group(recipe, data, slots, measure, groups, chunk_size)):
                if member is not None:
                    out[member.seed] = r.m, r.delta
            continue
        m, delta = reverse(recipe, data, slots, measure, route, chunk_size)
        for k, member in enumerate(slots):
            if member is not None:
                out[member.seed] = m[k], _sum_groups(delta[k], groups)
    return [out[m.seed] for m in members]


def unroll(ensemble, measure, mode: str = "reverse", groups=None, route: str = "auto",
           chunk_size: int | None = None) -> SeedSamples:
    """Per-seed removal effects of every member of ``ensemble`` as :class:`SeedSamples`.

    Returns m [K, Q] and δ [K, N, Q] (reverse mode) or δ [K, G, Q] (``groups``), with the seeds,
    the measurement names and method "unroll-reverse" / "unroll-forward".
    """
    measure = as_measurement(measure)
    alone = [m for m in ensemble.members if m.record.group is None]
    size = default_group_size(sum(p.numel() for p in ensemble.members[0].params.values()), len(alone))
    # members trained alone are swept together in groups of a size their memory allows
    grouped = [m for m in ensemble.members if m.record.group is not None]
    batches = ([grouped] if grouped else []) + [list(g) for g in groups_of(alone, size)]
    results = {}
    for batch in batches:
        for member, r in zip(batch, unroll_group(ensemble.recipe, ensemble.data, batch, measure, mode, groups,
                                                 route, chunk_size)):
            results[member.seed] = r
    ms = [results[s][0] for s in ensemble.seeds]
    deltas = [results[s][1] for s in ensemble.seeds]
    m = torch.stack(ms)
    meta = {"recipe": ensemble.recipe.describe(), "mode": mode, "route": route if mode == "reverse" else None,
            "N": len(ensemble.data)}
    return SeedSamples(m=m, delta=torch.stack(deltas), seeds=list(ensemble.seeds),
                       names=measure.names_for(m.shape[1]), method=f"unroll-{mode}",
                       groups=_check_groups(groups, len(ensemble.data)), meta=meta)
