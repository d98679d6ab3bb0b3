"""``diagnose``: how far influence functions are from unrolling along the training run (PAPER §4.1, Fig. 3).

For every member and every recorded checkpoint t > 0, the run truncated at t (its first t
batches, the checkpoints up to t, θ_t as the trained model) is attributed twice:

- reverse-mode unrolling, δ_UD(k) (:func:`dtda.attribute.unroll_member`);
- an influence function at θ_t, δ_IF(k) (:func:`dtda.attribute.influence` with ``method``);

and the table holds, per measurement q, the Pearson correlation over the training examples k of
δ_UD(·, q) and δ_IF(·, q), and the share of ∇m_q(θ_t) in the null space of H_t,
1 − ‖P_span(H_t)∇m_q‖²/‖∇m_q‖², from the explicit float64 matrix of H_t = curvature of
J = (1/N)Σℓ_n + ½λ_wd‖θ‖² over the covered parameters (GGN, or the Hessian with
``curvature="hessian"``; weight decay makes the span everything, so the share is then 0). The
share needs the d × d matrix, so it is computed for d ≤ ``MAX_EXACT`` covered parameters and is
None otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dtda.attribute.ihvp import MAX_EXACT
from dtda.attribute.influence import influence
from dtda.attribute.reverse import measurement_gradient
from dtda.attribute.unroll import unroll_member
from dtda.curvature.capture import find_layers
from dtda.curvature.products import Products
from dtda.curvature.solvers import explicit_inverse
from dtda.measure import as_measurement
from dtda.train.ensemble import Ensemble
from dtda.train.optim import SGD
from dtda.train.record import Member, Record
from dtda.train.step import Step

COLUMNS = ("seed", "step", "measurement", "correlation", "null_share")


@dataclass
class Diagnosis:
    """One row per (seed, checkpoint step, measurement): ``correlation`` = Pearson(δ_UD, δ_IF)
    over training examples (NaN when either is constant), ``null_share`` = the share of ∇m in
    H's null space (None when not computed)."""

    rows: list[dict]
    method: str
    meta: dict = field(default_factory=dict)

    def table(self) -> dict[str, list]:
        """The rows as columns: name -> list (``COLUMNS``)."""
        return {c: [row[c] for row in self.rows] for c in COLUMNS}

    def plot(self, path) -> None:
        """Write a PNG: correlation (top) and null-space share (bottom) against the step, one line
        per (seed, measurement). Needs matplotlib (the ``report`` extra)."""
        try:
            from matplotlib.figure import Figure
        except ImportError as err:
            raise ImportError("Diagnosis.plot needs matplotlib: pip install 'dtda[report]'") from err
        fig = Figure(figsize=(6.4, 6.0))
        top, bottom = fig.subplots(2, 1, sharex=True)
        lines: dict[tuple, list[dict]] = {}
        for row in self.rows:
            lines.setdefault((row["seed"], row["measurement"]), []).append(row)
        for (seed, name), rows in lines.items():
            steps = [r["step"] for r in rows]
            top.plot(steps, [r["correlation"] for r in rows], marker="o", label=f"seed {seed}, {name}")
            if all(r["null_share"] is not None for r in rows):
                bottom.plot(steps, [r["null_share"] for r in rows], marker="o")
        top.set_ylabel(f"corr(unroll, influence-{self.method})")
        top.set_ylim(-1.05, 1.05)
        top.legend(fontsize="small")
        bottom.set_ylabel("share of ∇m in null(H)")
        bottom.set_xlabel("training step t")
        fig.tight_layout()
        fig.savefig(path)


def truncated(member: Member, t: int) -> Member:
    """``member``'s run stopped at checkpoint step ``t``: batches[:t], checkpoints ≤ t."""
    rec = member.record
    if t not in rec.checkpoints:
        raise ValueError(f"diagnose: step {t} is not a checkpoint of member {member.seed} "
                         f"(have {sorted(rec.checkpoints)})")
    return Member(member.seed, Record(rec.batches[:t], {s: c for s, c in rec.checkpoints.items() if s <= t},
                                      rec.weights, rec.every))


def check_horizon(recipe, T: int, t: int) -> None:
    """A run truncated at t replays its first t steps with the schedule's horizon t; that is the
    run itself only if η_s does not depend on the horizon (constant, step, warmup-then-constant).
    Cosine and linear decay do: they are caught by probing s = 0, t/2 and t − 1."""
    for s in dict.fromkeys((0, t // 2, t - 1)):
        if recipe.lr(s, t) != recipe.lr(s, T):
            raise ValueError(f"diagnose: the learning-rate schedule {recipe.schedule!r} depends on the number of "
                             f"steps (η at step {s} is {recipe.lr(s, T):.3g} in the {T}-step run but "
                             f"{recipe.lr(s, t):.3g} when truncated at step {t}), so a truncated run is not the "
                             "run's first t steps; diagnose needs a schedule such as 'constant' or "
                             "('step', size, gamma)")


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the columns of a and b [N, Q] -> [Q] (NaN for a constant column)."""
    a = a.to(torch.float64) - a.to(torch.float64).mean(0)
    b = b.to(torch.float64) - b.to(torch.float64).mean(0)
    return ((a * b).sum(0) / (a.norm(dim=0) * b.norm(dim=0))).clamp(-1.0, 1.0)


def null_share(recipe, data, member: Member, measure, names: list[str], curvature: str = "ggn") -> Tensor:
    """1 − ‖P_span(H)∇m_q‖²/‖∇m_q‖² per measurement [Q] at the member's θ, H over ``names``."""
    module = recipe.build(member.seed)
    params = member.params
    weight_decay = recipe.optimizer.weight_decay if isinstance(recipe.optimizer, SGD) else 0.0
    prods = Products(module, params, dict(module.named_buffers()), names, data.X, data.y, recipe.loss_fn,
                     recipe.loss_name, weight_decay, curvature, dtype=torch.float64)
    _, grad_m = measurement_gradient(Step(recipe, module, member.seed, member.record.steps), measure, params)
    g = prods.flatten({k: grad_m[k] for k in names}).to(torch.float64)
    _, Q, scale = explicit_inverse(prods.matrix(), 0.0)
    span = Q[:, scale != 0]
    inside = (g @ span).square().sum(1)
    return (1.0 - inside / g.square().sum(1).clamp_min(torch.finfo(torch.float64).tiny)).clamp(0.0, 1.0)


def diagnose(ensemble: Ensemble, measure, method: str = "exact", damping: float | str = "training-time",
             fisher: str = "true", steps=None, modules=None, null_space: bool | None = None,
             **solver_options) -> Diagnosis:
    """Unrolling against influence functions over the recorded checkpoints (PAPER Fig. 3).

    ensemble: trained members (their Records' checkpoints are the diagnosed steps). measure: as
    for :func:`dtda.attribute.unroll`. method, damping, fisher, modules, solver_options: passed to
    :func:`dtda.attribute.influence` for each truncated run. steps: the checkpoint steps to
    diagnose (default: every checkpoint after 0). null_space: compute the null-space share (None:
    when the covered parameters number at most ``MAX_EXACT``; the curvature is
    ``solver_options["curvature"]``, default "ggn").
    """
    measure = as_measurement(measure)
    recipe, data = ensemble.recipe, ensemble.data
    first = ensemble.members[0]
    names = [k for layer in find_layers(recipe.build(first.seed), modules, list(first.params))
             for k in layer.parameters]
    d = sum(first.params[k].numel() for k in names)
    if null_space and d > MAX_EXACT:
        raise ValueError(f"diagnose: null_space=True needs an explicit matrix of at most {MAX_EXACT} covered "
                         f"parameters, got d = {d}; pass null_space=None or cover fewer modules with modules=")
    with_share = d <= MAX_EXACT if null_space is None else bool(null_space)
    curvature = solver_options.get("curvature", "ggn")
    plan = {m.seed: [t for t in sorted(m.record.checkpoints) if t > 0] if steps is None else list(steps)
            for m in ensemble.members}
    for member in ensemble.members:
        for t in plan[member.seed]:
            check_horizon(recipe, member.record.steps, t)
    runs = [(member, [truncated(member, t) for t in plan[member.seed]]) for member in ensemble.members]
    rows = []
    for member, truncations in runs:
        for run in truncations:
            _, ud = unroll_member(recipe, data, run, measure)
            got = influence(Ensemble(recipe, data, [run]), measure, method=method, damping=damping,
                            fisher=fisher, modules=modules, **solver_options)
            corr = pearson(ud, got.delta[0])
            share = null_share(recipe, data, run, measure, names, curvature) if with_share else None
            for q, name in enumerate(got.names):
                rows.append({"seed": member.seed, "step": run.record.steps, "measurement": name,
                             "correlation": float(corr[q]), "null_share": None if share is None else float(share[q])})
    return Diagnosis(rows, method, {"damping": damping, "fisher": fisher, "curvature": curvature,
                                    "options": solver_options})
