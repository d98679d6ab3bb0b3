"""Leave-one-out distributions (PAPER §8.4, Fig. 8): "LOO is noisy, not broken".

For chosen examples k, S' coupled retrains without k give d_s(k) = m_s(D∖k) − m_s. Across the
examples, the predicted mean shift δ̄(k) (and variance increase) is correlated with the actual
one estimated from the first S' = 2, 4, 8, … retrain seeds; with enough seeds the correlation
should grow. Correlations are Pearson over examples per measurement, averaged over measurements,
with a percentile bootstrap over examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dtda.evaluate.lds import effect_statistic, ensemble_sizes
from dtda.stats.correlation import pearson
from dtda.evaluate.retrain import coupled_seeds, retrained_samples
from dtda.samples import SeedSamples

LOO_STATISTICS = ("mean", "var_increase")


@dataclass
class LOOResult:
    """curve[stat][S'] = (correlation, CI low, CI high); predicted[stat] [G, Q]; actual: the
    retrained SeedSamples (δ [S, G, Q], one group per example)."""

    examples: list[int]
    mode: str
    curve: dict[str, dict[int, tuple[float, float, float]]]
    predicted: dict[str, torch.Tensor]
    actual: SeedSamples

    def __str__(self) -> str:
        return "\n".join(f"LOO {s} ({self.mode}, {len(self.examples)} examples): " + ", ".join(
            f"S'={k}: r = {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for k, v in c.items()) for s, c in self.curve.items())


def loo(samples: SeedSamples, recipe, train, measure, examples, seeds=None, mode: str = "subset", *,
        bootstrap: int = 1000, confidence: float = 0.95, group_size: int | None = None, cache=None,
        executor=None, progress: bool = False) -> LOOResult:
    """Predicted against actual leave-one-out effects of ``examples`` as the retrain seeds grow.

    seeds: retrain seeds (an int S: the attributed seeds first, then new ones; default the
    attributed seeds). Needs at least 3 examples (a correlation over examples). group_size, cache,
    executor, progress: as in :func:`dtda.evaluate.retrain_measurements`.
    """
    ids = [int(k) for k in examples]
    if len(set(ids)) < 3:
        raise ValueError(f"loo: needs at least 3 distinct examples to correlate over, got {ids}")
    seeds = coupled_seeds(samples, seeds)
    groups = [[k] for k in ids]
    actual = retrained_samples(samples, recipe, train, measure, groups, seeds, mode, group_size=group_size,
                               cache=cache, executor=executor, progress=progress)
    pred = samples.group(groups)
    predicted = {s: effect_statistic(pred.m, pred.delta, s) for s in LOO_STATISTICS}
    gen = torch.Generator().manual_seed(0)
    resamples = torch.randint(0, len(ids), (max(bootstrap, 1), len(ids)), generator=gen)
    alpha = 1 - confidence
    curve: dict[str, dict[int, tuple[float, float, float]]] = {s: {} for s in LOO_STATISTICS}
    for size in ensemble_sizes(len(seeds), 2):
        for s in LOO_STATISTICS:
            got = effect_statistic(actual.m[:size], actual.delta[:size], s)            # [G, Q]
            r = float(pearson(predicted[s], got, 0).nanmean())
            boot = torch.stack([pearson(predicted[s][i], got[i], 0).nanmean() for i in resamples])
            lo, hi = torch.nanquantile(boot, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=boot.dtype)).tolist()
            curve[s][size] = (r, lo, hi)
    return LOOResult(ids, mode, curve, predicted, actual)


__all__ = ["loo", "LOOResult"]
