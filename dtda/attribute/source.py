"""SOURCE (PAPER §5): influence through L segments of the recorded training run.

The member's run of T steps is split at recorded checkpoints into L segments ℓ = 1..L of K_ℓ
steps with mean learning rate η̄_ℓ; c_ℓ = η̄_ℓK_ℓ/(1 − μ) (heavy-ball momentum μ). Within a
segment the curvature and the removed example's gradient are taken as constant: H̄_ℓ is the
EK-FAC of J (weight decay included) at the segment-averaged weights θ̄_ℓ (Fast-SOURCE), and
ḡ_ℓ(k) = ∇ℓ_k(θ̄_ℓ), or (``average="checkpoints"``) the mean of ∇ℓ_k over the segment's
checkpoints (curvature still at θ̄_ℓ). Then, with ψ_ℓ(λ) = −expm1(−c_ℓλ)/λ (= c_ℓ at 0) and
S̄_ℓ = exp(−c_ℓH̄_ℓ), both applied in H̄_ℓ's EK-FAC eigenbasis (``KroneckerCurvature.apply``):

    u ← ∇m(θ_T);  for ℓ = L … 1:  term_ℓ = (θ̄_ℓ, ψ_ℓ(H̄_ℓ)u);  u ← S̄_ℓu
    δ^SRC(k) = (1/N) Σ_ℓ ⟨ψ_ℓ(H̄_ℓ)u_ℓ, ḡ_ℓ(k)⟩

so the method returns one term per segment (per checkpoint with ``average="checkpoints"``) and
the core scores them. The EK-FACs of every seed's segments are fitted together, K·L parameter
points in one ``kronecker.fit`` call (the registered ``prefit``, run before the per-seed calls).
SOURCE's damping is built in (ψ_ℓ(λ) ≈ 1/(λ + 1/c_ℓ)): the requested ``damping`` is ignored and
the run's meta records the 1/c_ℓ per segment as the damping used.
ψ_ℓ → 1/λ as c_ℓ → ∞, so L = 1 with c → ∞ is the EK-FAC IF at λ = 0.

Segments: with the checkpoint steps 0 = t_0 < t_1 < … < t_M = T (``checkpoint_every`` C), segment
ℓ runs from t_{i_{ℓ−1}} to t_{i_ℓ} with i_ℓ = round(ℓM/L); this needs M ≥ L, i.e. at least L + 1
distinct checkpoints (C ≤ T // L).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dtda.attribute.influence import MethodResult, SeedContext, register
from dtda.curvature import kronecker
from dtda.train.optim import SGD, Params
from dtda.train.recipe import Recipe
from dtda.train.record import Member

AVERAGES = ("weights", "checkpoints")


@dataclass(frozen=True)
class Segment:
    """Steps [start, stop) of the run, the checkpoint steps inside it (both ends included),
    and c = η̄K/(1 − μ)."""

    start: int
    stop: int
    checkpoints: tuple[int, ...]
    c: float


def segments(recipe: Recipe, member: Member, count: int) -> list[Segment]:
    """The ``count`` segments of ``member``'s run (see the module docstring). Raises a
    ValueError naming the ``checkpoint_every`` needed when there are too few checkpoints."""
    rec = member.record
    T = rec.steps
    marks = sorted(rec.checkpoints)
    if len(marks) < count + 1:
        need = (f"retrain with checkpoint_every ≤ {T // count} (e.g. Recipe(..., checkpoint_every={T // count}))"
                if T >= count else f"the run has only T = {T} steps; use segments ≤ {T}")
        raise ValueError(f"influence: method 'source' with {count} segments needs at least {count + 1} "
                         f"distinct checkpoints; member {member.seed} has {len(marks)} (steps {marks}, "
                         f"checkpoint_every = {rec.every}, T = {T}): {need}")
    if not isinstance(recipe.optimizer, SGD):
        raise ValueError(f"influence: method 'source' is derived for SGD (c = η̄K/(1 − μ)); this recipe uses "
                         f"{type(recipe.optimizer).__name__}. Use method='ekfac' or another solver")
    mu = recipe.optimizer.momentum
    M = len(marks) - 1
    bounds = [round(ell * M / count) for ell in range(count + 1)]
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        start, stop = marks[lo], marks[hi]
        lr = sum(recipe.lr(t, T) for t in range(start, stop)) / (stop - start)
        out.append(Segment(start, stop, tuple(marks[lo:hi + 1]), lr * (stop - start) / (1.0 - mu)))
    return out


def average_weights(member: Member, steps: tuple[int, ...]) -> Params:
    """θ̄: the mean of the checkpoints' parameters at ``steps`` (every parameter)."""
    ckpts = [member.record.checkpoints[t][0] for t in steps]
    return {k: sum(p[k] for p in ckpts) / len(ckpts) for k in ckpts[0]}


def psi(c: float):
    """λ ↦ ψ(λ) = −expm1(−cλ)/λ, = c at λ = 0 (λ ≥ 0: eigenvalues of H̄, weight decay included)."""
    def f(lam: Tensor) -> Tensor:
        positive = lam > 0
        safe = torch.where(positive, lam, torch.ones_like(lam))
        return torch.where(positive, -torch.expm1(-c * safe) / safe, torch.full_like(lam, c))
    return f


def decay(c: float):
    """λ ↦ exp(−cλ)."""
    return lambda lam: torch.exp(-c * lam)


def _check(options: dict) -> None:
    count = options["segments"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"influence: method 'source': segments must be a positive int (L), got {count!r}")
    if options["average"] not in AVERAGES:
        raise ValueError(f"influence: method 'source': average must be one of {AVERAGES}, got "
                         f"{options['average']!r}")


@dataclass
class Fitted:
    """One seed's segments, their averaged weights θ̄_ℓ and EK-FACs H̄_ℓ."""

    segments: list[Segment]
    thetas: list[Params]
    curvatures: list[kronecker.KroneckerCurvature]


def prefit(contexts: list[SeedContext], options: dict) -> list[Fitted]:
    """Every seed's segments checked, then the EK-FACs of all K seeds × L segments fitted in one
    ``kronecker.fit`` (one batched float64 eigendecomposition per matrix size)."""
    _check(options)
    count = options["segments"]
    segs = [segments(ctx.recipe, ctx.member, count) for ctx in contexts]
    thetas = [[average_weights(ctx.member, seg.checkpoints) for seg in per_seed]
              for ctx, per_seed in zip(contexts, segs)]
    first = contexts[0]
    curvatures = kronecker.fit(first.module, [t for per_seed in thetas for t in per_seed], first.buffers, first.data,
                               first.layers, first.fisher, first.recipe.loss_name,
                               [ctx.generator_seed for ctx in contexts for _ in range(count)], "ekfac",
                               first.batch_size, loss_fn=first.recipe.loss_fn, weight_decay=first.weight_decay)
    return [Fitted(segs[s], thetas[s], curvatures[s * count:(s + 1) * count]) for s in range(len(contexts))]


@register("source", options={"segments": 3, "average": "weights"}, damping="built-in", prefit=prefit)
def source(ctx: SeedContext, grad_m: Params, options: dict) -> MethodResult:
    fitted: Fitted = ctx.state
    segs, thetas = fitted.segments, fitted.thetas
    terms: list[tuple[Params, Params]] = []
    u = grad_m
    for ell in reversed(range(len(segs))):
        seg, curvature = segs[ell], fitted.curvatures[ell]
        scaled = curvature.apply(u, psi(seg.c))
        if options["average"] == "weights":
            terms.append((thetas[ell], scaled))
        else:
            share = {k: v / len(seg.checkpoints) for k, v in scaled.items()}
            terms.extend((ctx.member.record.checkpoints[t][0], share) for t in seg.checkpoints)
        if ell > 0:
            u = curvature.apply(u, decay(seg.c))
    meta = {"segments": [{"steps": [seg.start, seg.stop], "checkpoints": list(seg.checkpoints), "c": seg.c}
                         for seg in segs],
            "average": options["average"], "damping": [1.0 / seg.c for seg in segs]}
    return MethodResult(terms, meta)
