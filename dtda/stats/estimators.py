"""Point estimators of distributional influence from paired seed samples (PAPER.md §7).

Per query, X = {m_s} (before removal) and Y = {m_s + δ_s} (after, linearised) are paired by seed
s = 1..K. Every statistic is *after minus before*. Shapes: m [K, Q], delta [K, N, Q] (N examples or
groups); each statistic is [N, Q], quantile shifts [L, N, Q]. Moments use ddof = 1.

The heavy reductions (mean, variance, covariance, exact variance increase, sorted W2) run through
:func:`dtda.ops.seed_moments`, which native kernels accelerate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from dtda import ops
from dtda.stats.sorting import sort_values
from dtda.stats.special import normal_two_sided, student_t_two_sided

#: Every [N, Q] statistic, with its definition (sample forms; s runs over the K seeds).
STATISTICS: dict[str, str] = {
    "mean": "mean shift δ̄ = (1/K)Σ_s δ_s (after − before; the paper's mean influence is −δ̄)",
    "var_increase": "exact variance increase var̂(m+δ) − var̂(m) = 2ĉov(m, δ) + var̂(δ)",
    "var_increase_first_order": "first-order variance increase 2ĉov(m, δ)",
    "w2": "Wasserstein-2 between {m_s} and {m_s+δ_s}: ((1/K)Σ_i (y_(i) − x_(i))²)^½ on sorted samples",
    "shape_w2": "centred W2 (W2 of the mean-centred samples); W2² = δ̄² + shape_w2²",
    "w2_smoothed": "(δ̄² + ĉov(m, δ)²/var̂(m))^½, the W2 of the regression of δ on m",
    "w2_lower": "Gelbrich lower bound (δ̄² + (sd(Y) − sd(X))²)^½, sd with ddof 0",
    "w2_upper": "paired-coupling upper bound ((1/K)Σ_s δ_s²)^½",
    "sign_agreement": "(1/K)Σ_s 1[sign δ_s = sign δ̄]",
    "z": "per-draw signal-to-noise δ̄/sd(δ) (Nguyen et al. 2023; no √K)",
    "p": "two-sided normal p-value of z, 2(1 − Φ(|z|))",
    "t": "t statistic of the mean, √K·z",
    "p_t": "two-sided p-value of t against Student-t with K − 1 degrees of freedom",
    "cov": "ĉov(m, δ) over seeds",
    "delta_var": "var̂(δ) over seeds",
}

QUANTILE_PREFIX = "quantile_"


def quantile_key(level: float) -> str:
    """The statistic name of the quantile shift at ``level``, e.g. ``quantile_0.9``."""
    return f"{QUANTILE_PREFIX}{level:g}"


def sorted_quantiles(sorted_x: Tensor, levels: Sequence[float], dim: int = -1) -> Tensor:
    """Linearly interpolated quantiles (numpy's default, "type 7") of samples sorted along ``dim``.

    With n samples, level p sits at position h = (n − 1)p:
    ``x_(⌊h⌋) + (h − ⌊h⌋)(x_(⌊h⌋+1) − x_(⌊h⌋))``.
    Returns [L, *rest] with ``dim`` removed.
    """
    x = sorted_x.movedim(dim, -1)
    n = x.shape[-1]
    out = []
    for p in levels:
        h = (n - 1) * p
        lo = min(int(math.floor(h)), n - 1)
        hi = min(lo + 1, n - 1)
        frac = h - lo
        out.append(x[..., lo] + frac * (x[..., hi] - x[..., lo]))
    if not out:
        return x.new_empty((0, *x.shape[:-1]))
    return torch.stack(out)


def point_statistics(m: Tensor, delta: Tensor, levels: Sequence[float],
                     wanted: Iterable[str] | None = None) -> dict[str, Tensor]:
    """Statistics of X = {m_s} vs Y = {m_s + δ_s} for every (n, q).

    m: [K, Q]; delta: [K, N, Q]; levels: quantile levels in [0, 1]. Returns a dict of [N, Q]
    tensors (names in :data:`STATISTICS` and ``quantile_<p>`` per level) in the dtype of the
    inputs. ``wanted`` limits the work to the named statistics (the bootstrap asks for a few);
    the seed moments (mean, var_increase, var_increase_first_order, w2, cov, delta_var) always come.
    """
    wanted = set(STATISTICS) | {quantile_key(p) for p in levels} if wanted is None else set(wanted)
    K = m.shape[0]
    mom = ops.seed_moments(m, delta)
    mean = mom.mean
    out = {"mean": mean, "var_increase": mom.var_increase, "var_increase_first_order": 2 * mom.cov,
           "w2": mom.w2, "cov": mom.cov, "delta_var": mom.var}

    q_keys = [(i, quantile_key(p)) for i, p in enumerate(levels) if quantile_key(p) in wanted]
    if "shape_w2" in wanted or q_keys:
        x = sort_values(m, 0)                               # [K, Q]
        y = sort_values(m.unsqueeze(1) + delta, 0)          # [K, N, Q]
        if "shape_w2" in wanted:
            diff = y - x.unsqueeze(1)
            # Centre on the mean sorted difference (= mean(Y) − mean(X)) so the split is exact.
            out["shape_w2"] = (diff - diff.mean(0)).square().mean(0).sqrt()
        if q_keys:
            used = [levels[i] for i, _ in q_keys]
            shifts = sorted_quantiles(y, used, dim=0) - sorted_quantiles(x, used, dim=0).unsqueeze(1)
            out.update({key: shifts[j] for j, (_, key) in enumerate(q_keys)})

    var_m = m.var(0, correction=1)                                  # [Q]
    if "w2_smoothed" in wanted:
        slope_term = torch.where(var_m > 0, mom.cov.square() / var_m.clamp_min(torch.finfo(m.dtype).tiny),
                                 torch.zeros_like(mom.cov))
        out["w2_smoothed"] = (mean.square() + slope_term).sqrt()
    if "w2_lower" in wanted:
        # Gelbrich holds for the empirical measures, whose variances have ddof 0.
        pop = (K - 1) / K
        sd_x = (var_m * pop).sqrt()
        sd_y = ((var_m + mom.var_increase).clamp_min(0) * pop).sqrt()
        out["w2_lower"] = (mean.square() + (sd_y - sd_x).square()).sqrt()
    if "w2_upper" in wanted:
        out["w2_upper"] = delta.square().mean(0).sqrt()
    if "sign_agreement" in wanted:
        out["sign_agreement"] = (torch.sign(delta) == torch.sign(mean)).to(m.dtype).mean(0)

    if wanted & {"z", "p", "t", "p_t"}:
        sd = mom.var.sqrt()
        # sd = 0: z is ±inf for a nonzero mean (p = 0) and 0 when the mean is 0 too.
        degenerate = torch.where(mean == 0, torch.zeros_like(mean), torch.sign(mean) * math.inf)
        z = torch.where(sd > 0, mean / sd, degenerate)
        t = math.sqrt(K) * z
        out.update(z=z, t=t)
        if "p" in wanted:
            out["p"] = normal_two_sided(z).to(m.dtype)
        if "p_t" in wanted:
            out["p_t"] = student_t_two_sided(t, K - 1).to(m.dtype)
    return out
