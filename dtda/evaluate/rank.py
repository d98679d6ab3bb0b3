"""Spearman–Brown and a percentile bootstrap of a mean, in torch (no scipy); the correlations themselves
are :mod:`dtda.stats.correlation`'s."""

from __future__ import annotations

import torch
from torch import Tensor


def spearman_brown(r: Tensor) -> Tensor:
    """Split-half → full-length reliability 2r/(1+r); for r < 0 the symmetric 2r/(1+|r|), so the
    result stays in [−1, 1] (halves that disagree mean no reliable signal, not a ceiling below −1)."""
    return 2 * r / (1 + r.abs())


def bootstrap_mean(values: Tensor, resamples: int = 2000, confidence: float = 0.95,
                   seed: int = 0) -> tuple[float, float]:
    """Percentile CI of the mean of ``values`` [n] (NaNs dropped) over resamples with replacement."""
    v = values[~torch.isnan(values)].to(torch.float64)
    if v.numel() == 0:
        return float("nan"), float("nan")
    if v.numel() == 1 or resamples < 1:
        return float(v.mean()), float(v.mean())
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(0, v.numel(), (resamples, v.numel()), generator=gen)
    means = v[idx].mean(1)
    alpha = 1 - confidence
    lo, hi = torch.quantile(means, torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64))
    return float(lo), float(hi)
