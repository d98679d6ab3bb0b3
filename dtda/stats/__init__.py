"""dtda.stats: distributional statistics of paired seed samples (knows SeedSamples and ops, never models).

``distributional(samples)`` compares X = {m_s} with Y = {m_s + δ_s} per (example or group,
measurement): mean shift, variance increase (exact and first order), W2 (sorted, shape, smoothed,
bounds), quantile shifts, sign agreement, z/p and t tests, with seed-bootstrap percentile CIs.
Every statistic is after removal minus before. Definitions: ``docs/statistics.md``.
"""

from dtda.stats.api import DEFAULT_CI, DEFAULT_QUANTILES, distributional
from dtda.stats.bootstrap import bootstrap_indices
from dtda.stats.estimators import QUANTILE_PREFIX, STATISTICS, point_statistics, quantile_key, sorted_quantiles
from dtda.stats.result import Distributional, Top
from dtda.stats.special import betainc, normal_two_sided, student_t_cdf, student_t_two_sided

__all__ = [
    "distributional", "Distributional", "Top", "STATISTICS", "QUANTILE_PREFIX", "DEFAULT_QUANTILES",
    "DEFAULT_CI",
    "bootstrap_indices", "point_statistics", "quantile_key", "sorted_quantiles", "betainc",
    "normal_two_sided", "student_t_cdf", "student_t_two_sided",
]
