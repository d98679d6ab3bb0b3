"""Rank correlation, Spearman–Brown and a percentile bootstrap of a mean, in torch (no scipy)."""

from __future__ import annotations

import torch
from torch import Tensor


def ranks(x: Tensor, dim: int = 0) -> Tensor:
    """Ranks 1..n along ``dim``, ties sharing their average rank (float64)."""
    x = x.movedim(dim, -1).to(torch.float64)
    n = x.shape[-1]
    order = x.argsort(dim=-1, stable=True)
    s = x.gather(-1, order)
    pos = torch.arange(1, n + 1, dtype=torch.float64).expand_as(s)
    # Average rank within runs of equal values: the run's first and last positions, averaged.
    new_run = torch.ones_like(s, dtype=torch.bool)
    new_run[..., 1:] = s[..., 1:] != s[..., :-1]
    run_id = new_run.long().cumsum(-1) - 1
    first = torch.zeros_like(s).scatter_reduce(-1, run_id, pos, "amin", include_self=False)
    last = torch.zeros_like(s).scatter_reduce(-1, run_id, pos, "amax", include_self=False)
    avg = ((first + last) / 2).gather(-1, run_id)
    out = torch.empty_like(avg).scatter_(-1, order, avg)
    return out.movedim(-1, dim)


def pearson(a: Tensor, b: Tensor, dim: int = 0) -> Tensor:
    """Pearson correlation along ``dim`` (NaN where either side is constant)."""
    a = a.to(torch.float64) - a.to(torch.float64).mean(dim, keepdim=True)
    b = b.to(torch.float64) - b.to(torch.float64).mean(dim, keepdim=True)
    den = (a.square().sum(dim) * b.square().sum(dim)).sqrt()
    num = (a * b).sum(dim)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))


def spearman(a: Tensor, b: Tensor, dim: int = 0) -> Tensor:
    """Spearman's ρ along ``dim`` (Pearson of average ranks; NaN where a side is constant or NaN)."""
    bad = torch.isnan(a).any(dim) | torch.isnan(b).any(dim)
    rho = pearson(ranks(a, dim), ranks(b, dim), dim)
    return torch.where(bad, torch.full_like(rho, float("nan")), rho)


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
