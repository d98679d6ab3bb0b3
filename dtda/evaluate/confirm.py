"""``confirm``: retrain without chosen examples and check the predicted distributional effects.

For a removal group G (or each chosen example alone), per measurement q:

- **predicted**: the attributed samples, X = {m_s} and Ŷ = {m_s + δ_s(G)} over the K attributed
  seeds: mean shift, variance increase (exact sample form) and W2, with seed-bootstrap CIs;
- **actual**: coupled retraining without G (``masked`` or ``subset``) on ``seeds`` (more seeds
  than attributed ones adds new full-data runs): the same statistics of X and Y = {m_s(D∖G)};
- **per-seed agreement** (masked mode): the Pearson correlation over the shared seeds of δ_s(G)
  and the actual change m_s(D∖G) − m_s; masked retraining is the per-seed target of δ_s;
- the **chaotic floor**: the same statistics on null controls whose true effect is (nearly)
  zero, so what they show is what retraining noise alone produces with this many seeds:
  ``tiny`` retrains with the weights of G at 1 − ε instead of 0 (masked; a first-order effect ε·δ,
  negligible), and ``random`` removes |G| examples drawn from the half of the data with the
  smallest |δ̄| on every measurement (in the same mode, so subset mode's batch reshuffle is in the floor too). The
  floor of a statistic is the largest |CI bound| over the controls. ``tiny`` also gives the
  difference quotient (m_s(1 − ε) − m_s)/ε, whose correlation with δ_s(G) over seeds says whether
  fixed-seed derivatives describe retraining at all (chaotic training: they do not).

The verdict per (group, measurement) and statistic: an actual value whose CI excludes 0 and whose
size exceeds the floor is *resolved*; then the sign is confirmed if it agrees with the prediction
and the magnitude if the prediction lies inside the actual CI or within a factor ``tolerance`` of
it. An unresolved effect with a predicted size below the floor is *below what retraining with this
many seeds can resolve*; one predicted above the floor is *unresolved* when the actual CI holds
the prediction (more seeds would tell) and *not confirmed* when it does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dtda.stats.correlation import pearson
from dtda.evaluate.removal import Removal
from dtda.evaluate.retrain import check_mode, coupled_seeds, open_cache, retrained_samples
from dtda.measure import as_measurement
from dtda.samples import SeedSamples
from dtda.stats import Distributional, distributional
from dtda.train.data import as_data

#: The statistics compared, with whether they carry a sign.
COMPARED = {"mean": True, "var_increase": True, "w2": False}
LABELS = {"mean": "mean shift", "var_increase": "variance increase", "w2": "W2"}
CONTROLS = ("tiny", "random")


@dataclass
class Verdict:
    """One statistic's check: ``status`` is "confirmed", "sign" (sign confirmed, magnitude off),
    "magnitude-off", "sign-contradicted", "unresolved", "not-confirmed" or "below-floor"; ``text``
    says it in words."""

    status: str
    text: str


@dataclass
class ConfirmResult:
    """Predicted against actual effects of removing ``groups`` (lists of example indices).

    predicted, actual: :class:`SeedSamples` (δ [K, G, Q] and [S, G, Q]) and their statistics
    (``pred_stats``, ``actual_stats``, :class:`dtda.stats.Distributional` with CIs);
    floor: statistic -> [G, Q]; per_seed_corr [G, Q] (masked mode, else None); quotient_corr
    [G, Q] (the ``tiny`` control's difference quotient against δ_s(G), or None);
    verdicts[g][q]: statistic -> :class:`Verdict`.
    """

    mode: str
    groups: list[list[int]]
    names: list[str]
    predicted: SeedSamples
    actual: SeedSamples
    pred_stats: Distributional
    actual_stats: Distributional
    floor: dict[str, Tensor]
    controls: dict[str, Distributional]
    per_seed_corr: Tensor | None
    quotient_corr: Tensor | None
    verdicts: list[list[dict[str, Verdict]]]
    epsilon: float
    tolerance: float
    meta: dict = field(default_factory=dict)

    def line(self, g: int, q: int) -> str:
        """The one-line verdict for group ``g`` and measurement ``q``."""
        parts = [f"{LABELS[s]} {v.text}" for s, v in self.verdicts[g][q].items()]
        who = f"without {_examples(self.groups[g])}"
        return f"{self.names[q]} {who}: " + "; ".join(parts)

    def rows(self) -> list[dict]:
        """One JSON-able row per (group, measurement) with every number of the table."""
        out = []
        for g, group in enumerate(self.groups):
            for q, name in enumerate(self.names):
                row = {"examples": group, "measurement": name}
                for s in COMPARED:
                    row[s] = {"predicted": _f(self.pred_stats.get(s)[g, q]),
                              "predicted_ci": _ci(self.pred_stats, s, g, q),
                              "actual": _f(self.actual_stats.get(s)[g, q]),
                              "actual_ci": _ci(self.actual_stats, s, g, q),
                              "floor": _f(self.floor[s][g, q]),
                              "verdict": self.verdicts[g][q][s].status}
                if self.per_seed_corr is not None:
                    row["per_seed_corr"] = _f(self.per_seed_corr[g, q])
                if self.quotient_corr is not None:
                    row["quotient_corr"] = _f(self.quotient_corr[g, q])
                row["line"] = self.line(g, q)
                out.append(row)
        return out

    def to_dict(self) -> dict:
        return {"mode": self.mode, "groups": self.groups, "attributed_seeds": self.predicted.seeds,
                "retrain_seeds": self.actual.seeds, "controls": sorted(self.controls), "epsilon": self.epsilon,
                "tolerance": self.tolerance, "confidence": self.actual_stats.confidence, "rows": self.rows(),
                **self.meta}

    def __str__(self) -> str:
        return "\n".join(self.line(g, q) for g in range(len(self.groups)) for q in range(len(self.names)))


def _f(v) -> float | None:
    v = float(v)
    return None if v != v else v


def _ci(stats: Distributional, s: str, g: int, q: int) -> list[float | None] | None:
    if s not in stats.ci:
        return None
    return [_f(stats.ci[s][0, g, q]), _f(stats.ci[s][1, g, q])]


def _examples(group: list[int]) -> str:
    shown = ", ".join(map(str, group[:6])) + (", …" if len(group) > 6 else "")
    return f"example{'s' if len(group) > 1 else ''} {shown}"


def judge(predicted: float, actual: float, lo: float, hi: float, floor: float, signed: bool,
          tolerance: float, seeds: int) -> Verdict:
    """The verdict for one statistic (see the module docstring)."""
    fmt = f"predicted {predicted:+.3g}, actual {actual:+.3g} [{lo:+.3g}, {hi:+.3g}]"
    resolved = abs(actual) > floor and (lo > 0 or hi < 0 if signed else lo > floor)
    if not resolved:
        if abs(predicted) <= floor:
            return Verdict("below-floor", f"below what retraining with {seeds} seeds can resolve "
                                          f"(floor {floor:.3g}; {fmt})")
        if lo <= predicted <= hi:
            return Verdict("unresolved", f"consistent but not resolved by {seeds} seeds: the actual interval "
                                         f"holds the prediction but also 0 or values below the floor "
                                         f"{floor:.3g}; retrain more seeds ({fmt})")
        return Verdict("not-confirmed", f"not confirmed: retraining finds no effect above the floor "
                                        f"{floor:.3g} ({fmt})")
    if signed and (actual > 0) != (predicted > 0):
        return Verdict("sign-contradicted", f"sign contradicted ({fmt})")
    ratio = actual / predicted if predicted != 0 else float("inf")
    if lo <= predicted <= hi or 1 / tolerance <= ratio <= tolerance:
        return Verdict("confirmed", f"confirmed{' (sign and magnitude)' if signed else ''} ({fmt})")
    what = "sign confirmed, magnitude off" if signed else "magnitude off"
    return Verdict("sign" if signed else "magnitude-off", f"{what}: actual/predicted {ratio:.2g} ({fmt})")


def low_effect_examples(samples: SeedSamples, exclude: set[int], size: int, seed: int) -> list[int]:
    """``size`` examples drawn at random from the half with the smallest effect on every
    measurement: max over q of |δ̄(k, q)| / sd_k(δ̄(·, q))."""
    mean = samples.delta.to(torch.float64).mean(0)                               # [N, Q]
    score = (mean.abs() / mean.std(0).clamp_min(1e-300)).amax(1)                 # [N]
    order = [i for i in score.argsort().tolist() if i not in exclude]
    pool = order[:max(size, len(order) // 2)]
    if len(pool) < size:
        raise ValueError(f"confirm: cannot draw {size} control examples from the {len(pool)} left")
    gen = torch.Generator().manual_seed(int(seed))
    return sorted(pool[i] for i in torch.randperm(len(pool), generator=gen)[:size].tolist())


def confirm(samples: SeedSamples, recipe, train, measure, examples, seeds=None, mode: str = "masked", *,
            each: bool = False, controls=CONTROLS, epsilon: float = 1e-3, tolerance: float = 2.0,
            bootstrap: int = 1000, confidence: float = 0.95, control_seed: int = 0,
            group_size: int | None = None, cache=None, executor=None, progress: bool = False) -> ConfirmResult:
    """Retrain without ``examples`` on coupled seeds and compare with the prediction of ``samples``.

    samples: per-example attributions (δ [K, N, Q]) of ``recipe`` on ``train`` for ``measure``.
    examples: training-example indices, removed together (``each``: one at a time). seeds: an int
    S (the attributed seeds first, then new ones) or a list; default the attributed seeds. mode:
    "masked" or "subset". controls: null controls for the chaotic floor ("tiny", "random", or
    both); epsilon: the ``tiny`` control's weight change. tolerance: the factor within which a
    magnitude counts as confirmed. bootstrap, confidence: the seed-bootstrap CIs. group_size,
    cache, executor, progress: as in :func:`dtda.evaluate.retrain_measurements`.
    """
    check_mode(mode)
    if samples.groups is not None:
        raise ValueError("confirm: samples must be per training example (delta [K, N, Q]), not per group")
    if samples.K < 2:
        raise ValueError(f"confirm: needs at least 2 attributed seeds, got {samples.K}")
    controls = tuple(controls)
    bad = [c for c in controls if c not in CONTROLS]
    if bad:
        raise ValueError(f"confirm: controls must be a subset of {CONTROLS}, got {list(controls)}")
    if not 0 < epsilon < 1:
        raise ValueError(f"confirm: epsilon must be in (0, 1), got {epsilon!r}")
    if not tolerance > 1:
        raise ValueError(f"confirm: tolerance must be > 1 (a factor), got {tolerance!r}")
    ids = [int(i) for i in (examples if not isinstance(examples, int) else [examples])]
    groups = [[i] for i in ids] if each else [ids]
    removals = [Removal.of(g, samples.N) for g in groups]
    seeds = coupled_seeds(samples, seeds)
    if len(seeds) < 2:
        raise ValueError(f"confirm: needs at least 2 retrain seeds, got {seeds}")
    data = as_data(train, recipe.dtype, recipe.loss_name)
    measure = as_measurement(measure)
    cache = open_cache(cache, recipe, data, measure)
    run = dict(group_size=group_size, cache=cache, executor=executor, progress=progress)

    predicted = samples.group([list(r.indices) for r in removals])
    actual = retrained_samples(samples, recipe, data, measure, removals, seeds, mode, **run)
    stat_options = dict(quantiles=(), bootstrap=bootstrap, confidence=confidence, ci=tuple(COMPARED))
    pred_stats = distributional(predicted, **stat_options)
    actual_stats = distributional(actual, **stat_options)

    control_stats: dict[str, Distributional] = {}
    quotient_corr = None
    if "tiny" in controls:
        tiny = [Removal.of(r.indices, samples.N, 1.0 - epsilon) for r in removals]
        null = retrained_samples(samples, recipe, data, measure, tiny, seeds, "masked", **run)
        control_stats["tiny"] = distributional(null, **stat_options)
        quotient_corr = _paired_corr(predicted, null, scale=1 / epsilon)
    if "random" in controls:
        chosen = set(ids)
        randoms = [Removal.of(low_effect_examples(samples, chosen, len(r), control_seed + g), samples.N)
                   for g, r in enumerate(removals)]
        null = retrained_samples(samples, recipe, data, measure, randoms, seeds, mode, **run)
        control_stats["random"] = distributional(null, **stat_options)
    floor = {s: _floor(control_stats, s, actual_stats) for s in COMPARED}

    verdicts = [[{s: judge(float(pred_stats.get(s)[g, q]), float(actual_stats.get(s)[g, q]),
                           float(actual_stats.ci[s][0, g, q]), float(actual_stats.ci[s][1, g, q]),
                           float(floor[s][g, q]), signed, tolerance, len(seeds))
                  for s, signed in COMPARED.items()}
                 for q in range(samples.Q)] for g in range(len(groups))]
    return ConfirmResult(mode=mode, groups=[list(r.indices) for r in removals], names=list(samples.names),
                         predicted=predicted, actual=actual, pred_stats=pred_stats, actual_stats=actual_stats,
                         floor=floor, controls=control_stats,
                         per_seed_corr=_paired_corr(predicted, actual) if mode == "masked" else None,
                         quotient_corr=quotient_corr, verdicts=verdicts, epsilon=epsilon, tolerance=tolerance)


def _floor(controls: dict[str, Distributional], s: str, like: Distributional) -> Tensor:
    """The largest |CI bound| of statistic ``s`` over the null controls (0 without controls)."""
    if not controls:
        return torch.zeros_like(like.get(s))
    return torch.stack([c.ci[s].abs().amax(0) for c in controls.values()]).amax(0)


def _paired_corr(predicted: SeedSamples, other: SeedSamples, scale: float = 1.0) -> Tensor:
    """Pearson correlation over the seeds both hold of δ_s(G) and ``scale``·(other's δ_s(G)) [G, Q]."""
    shared = [s for s in predicted.seeds if s in other.seeds]
    a = predicted.delta[[predicted.seeds.index(s) for s in shared]]
    b = other.delta[[other.seeds.index(s) for s in shared]] * scale
    return pearson(a, b, 0)


__all__ = ["confirm", "ConfirmResult", "Verdict", "judge", "low_effect_examples", "COMPARED", "CONTROLS"]
