"""Linear datamodeling score and its distributional versions (PAPER §8.2, §8.3).

Per measurement q, over M random subsets S_j ⊂ D of size αN (G_j = D∖S_j removed):

- ground truth: X = {m_s} (full data) and Y_j = {m_s(D∖G_j)} from R coupled retrains (seeds
  shared with the attributed ones); DistInf_true(j) = Δ(X, Y_j);
- prediction: Ŷ_j = {m_s + Σ_{k∈G_j} δ_s(k)} over the K attributed seeds; DistInf_pred(j) = Δ(X, Ŷ_j);
- LDS_Δ(q) = Spearman_j(DistInf_true, DistInf_pred); the score is its mean over measurements,
  with a percentile bootstrap CI over measurements.

Δ is the mean shift (the classical LDS, TRAK's τ = −δ̄ scoring −LDS), the variance increase, W2,
the shape W2 or a quantile shift, each computed by :func:`dtda.stats.point_statistics` on paired
samples (after − before). Every score comes with:

- the **noise ceiling**: the ground truth of two disjoint halves of the R retrain seeds, rank
  correlated over j per measurement, averaged over random splits, Spearman–Brown corrected
  (:func:`~dtda.evaluate.rank.spearman_brown`); a score near the ceiling is as good as this
  benchmark can tell;
- the **ensemble-size curve**: the score with the first K' = 1, 2, 4, … attributed seeds (K' = 1
  is single-model LDS), so a method that needs more seeds and a weak one can be told apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dtda.evaluate.rank import bootstrap_mean, spearman_brown
from dtda.stats.correlation import spearman
from dtda.evaluate.retrain import check_mode, coupled_seeds, retrained_samples
from dtda.samples import SeedSamples
from dtda.stats import point_statistics, quantile_key

#: Statistic names accepted by :func:`lds` (plus "quantile:p" for p in [0, 1]).
LDS_STATISTICS = ("mean", "var_increase", "w2", "shape_w2")


def parse_stat(stat: str) -> tuple[str, tuple[float, ...]]:
    """(statistic key of :func:`point_statistics`, quantile levels) for ``stat``."""
    if stat in LDS_STATISTICS:
        return stat, ()
    for prefix in ("quantile:", "quantile_"):
        if isinstance(stat, str) and stat.startswith(prefix):
            try:
                p = float(stat[len(prefix):])
            except ValueError:
                break
            if 0 <= p <= 1:
                return quantile_key(p), (p,)
    raise ValueError(f"stat must be one of {LDS_STATISTICS} or 'quantile:p' with p in [0, 1] "
                     f"(e.g. 'quantile:0.9'), got {stat!r}")


def effect_statistic(m: Tensor, delta: Tensor, stat: str) -> Tensor:
    """Δ(X, X + δ) [G, Q] for m [K, Q] and δ [K, G, Q], float64 (``stat`` as in :func:`lds`)."""
    key, levels = parse_stat(stat)
    if key == "mean":  # also defined for one seed
        return delta.to(torch.float64).mean(0)
    if m.shape[0] < 2:
        return torch.full(delta.shape[1:], float("nan"), dtype=torch.float64)
    return point_statistics(m.to(torch.float64), delta.to(torch.float64), levels, {key})[key]


def group_effects(samples: SeedSamples, masks: Tensor, seeds: int | None = None) -> Tensor:
    """δ_s(G_j) = Σ_{k∈G_j} δ_s(k) [K', M, Q] for removal masks [M, N], first ``seeds`` seeds."""
    delta = samples.delta[:seeds].to(torch.float64)
    return torch.einsum("knq,mn->kmq", delta, masks.to(torch.float64))


@dataclass
class LDSResult:
    """One (distributional) LDS evaluation.

    per_query [Q]: Spearman over subsets per measurement; score: their mean (NaNs dropped) with
    ``ci`` (percentile bootstrap over measurements); noise_ceiling [Q] and ``ceiling`` (its mean);
    curve: K' -> score with the first K' attributed seeds; truth, predicted [M, Q]: DistInf per
    subset; removed [M, N] (bool): G_j; seeds: the retrain seeds (R of them).
    """

    stat: str
    mode: str
    alpha: float
    method: str
    names: list[str]
    seeds: list[int]
    per_query: Tensor
    score: float
    ci: tuple[float, float]
    noise_ceiling: Tensor
    ceiling: float
    curve: dict[int, float]
    truth: Tensor
    predicted: Tensor
    removed: Tensor
    confidence: float = 0.95
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able summary (no per-subset tensors; NaN as None)."""
        return {"stat": self.stat, "mode": self.mode, "alpha": self.alpha, "method": self.method,
                "subsets": int(self.removed.shape[0]), "retrain_seeds": self.seeds,
                "attributed_seeds": max(self.curve) if self.curve else None,
                "score": _num(self.score), "ci": [_num(v) for v in self.ci], "confidence": self.confidence,
                "noise_ceiling": _num(self.ceiling), "ensemble_curve": {str(k): _num(v) for k, v in self.curve.items()},
                "per_query": {n: _num(v) for n, v in zip(self.names, self.per_query.tolist())},
                "noise_ceiling_per_query": {n: _num(v) for n, v in zip(self.names, self.noise_ceiling.tolist())},
                **self.meta}

    def __str__(self) -> str:
        curve = ", ".join(f"K={k}: {v:.3f}" for k, v in self.curve.items())
        return (f"LDS[{self.stat}, {self.mode}, α={self.alpha:g}] of {self.method}: {self.score:.3f} "
                f"[{self.ci[0]:.3f}, {self.ci[1]:.3f}] over {len(self.names)} measurements; "
                f"noise ceiling {self.ceiling:.3f} ({len(self.seeds)} retrain seeds); {curve}")


def _num(v: float) -> float | None:
    return None if v != v else v


def draw_removals(n: int, alpha: float, subsets: int, seed: int) -> Tensor:
    """[M, N] bool masks of G_j = D∖S_j with |S_j| = round(αN), from a seeded generator."""
    keep = round(alpha * n)
    if not 1 <= keep <= n - 1:
        raise ValueError(f"alpha: the subsets keep round(alpha·N) = {keep} of N = {n} examples; "
                         f"choose alpha so that between 1 and N − 1 are kept, got alpha = {alpha}")
    gen = torch.Generator().manual_seed(int(seed))
    masks = torch.ones(subsets, n, dtype=torch.bool)
    for j in range(subsets):
        masks[j, torch.randperm(n, generator=gen)[:keep]] = False
    return masks


def ensemble_sizes(K: int, first: int) -> list[int]:
    """1, 2, 4, … below K, then K (from ``first``)."""
    sizes, k = [], 1
    while k < K:
        if k >= first:
            sizes.append(k)
        k *= 2
    return sizes + [K]


def noise_ceiling(m: Tensor, delta: Tensor, stat: str, splits: int, seed: int) -> Tensor:
    """Spearman–Brown corrected split-half agreement [Q] of the ground truth DistInf_true over
    subsets: m [R, Q], δ [R, M, Q] (retrained − full data); averaged over ``splits`` random halves."""
    R = m.shape[0]
    if R < (2 if stat == "mean" else 4):  # halves of at least one seed (two for spreads)
        return torch.full((m.shape[1],), float("nan"), dtype=torch.float64)
    gen = torch.Generator().manual_seed(int(seed))
    half = R // 2
    rs = []
    for _ in range(splits):
        perm = torch.randperm(R, generator=gen)
        a, b = perm[:half], perm[half:2 * half]
        rs.append(spearman(effect_statistic(m[a], delta[a], stat), effect_statistic(m[b], delta[b], stat)))
    return spearman_brown(torch.stack(rs).nanmean(0))


def lds(samples: SeedSamples, recipe, train, measure, alpha: float = 0.5, subsets: int = 100,
        seeds_per_subset: int | None = None, stat: str = "mean", mode: str = "subset", *,
        subset_seed: int = 0, bootstrap: int = 2000, confidence: float = 0.95, splits: int = 20,
        group_size: int | None = None, cache=None, executor=None, progress: bool = False) -> LDSResult:
    """(Distributional) LDS of ``samples`` (m [K, Q], δ [K, N, Q]) against coupled retraining.

    recipe, train, measure: those the samples were attributed with. alpha: fraction of the data
    each subset keeps; subsets: M; seeds_per_subset: R retrain seeds per subset, the first R of the
    samples' seeds (more than K adds new seeds, whose full-data runs are trained too; default K).
    stat: "mean", "var_increase", "w2", "shape_w2" or "quantile:p". mode: "subset" (PAPER §8.3)
    or "masked" (fixed-seed target). subset_seed draws the subsets; bootstrap/confidence: the CI
    over measurements; splits: random halves averaged in the noise ceiling. group_size, cache,
    executor, progress: as in :func:`dtda.evaluate.retrain_measurements` (the retrainings are reused across
    statistics and methods that share recipe, data, measurement, subsets and seeds).
    """
    parse_stat(stat)
    check_mode(mode)
    if samples.groups is not None:
        raise ValueError("lds: samples must be per training example (delta [K, N, Q]), not per group")
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 3:
        raise ValueError(f"lds: subsets must be an int ≥ 3 (a rank correlation over subsets), got {subsets!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"lds: confidence must be in (0, 1), got {confidence!r}")
    K, N = samples.K, samples.N
    R = K if seeds_per_subset is None else seeds_per_subset
    if isinstance(R, bool) or not isinstance(R, int) or R < 1:
        raise ValueError(f"lds: seeds_per_subset must be a positive int, got {seeds_per_subset!r}")
    seeds = coupled_seeds(samples, R)
    masks = draw_removals(N, alpha, subsets, subset_seed)
    removals = [torch.nonzero(row).flatten().tolist() for row in masks]
    actual = retrained_samples(samples, recipe, train, measure, removals, seeds, mode, group_size=group_size,
                               cache=cache, executor=executor, progress=progress)
    truth = effect_statistic(actual.m, actual.delta, stat)

    def score_with(k: int) -> Tensor:
        return spearman(truth, effect_statistic(samples.m[:k], group_effects(samples, masks, k), stat))

    per_query = score_with(K)
    first = 1 if stat == "mean" else 2  # one seed has no variance or shape
    curve = {k: float(score_with(k).nanmean()) for k in ensemble_sizes(K, first)}
    ceiling = noise_ceiling(actual.m, actual.delta, stat, splits, subset_seed)
    return LDSResult(stat=stat, mode=mode, alpha=float(alpha), method=samples.method, names=list(samples.names),
                     seeds=seeds, per_query=per_query, score=float(per_query.nanmean()),
                     ci=bootstrap_mean(per_query, bootstrap, confidence, subset_seed),
                     noise_ceiling=ceiling, ceiling=float(ceiling.nanmean()), curve=curve, truth=truth,
                     predicted=effect_statistic(samples.m, group_effects(samples, masks), stat),
                     removed=masks, confidence=confidence)


__all__ = ["lds", "LDSResult", "LDS_STATISTICS", "parse_stat", "effect_statistic", "noise_ceiling",
           "draw_removals"]
