"""Correlations over examples or subsets, in torch (no scipy): Pearson, and Spearman as the Pearson
correlation of average ranks. One home for the statistics that compare rankings (method agreement,
LDS)."""

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
