"""``distributional(samples)``: every statistic of a SeedSamples, with seed-bootstrap CIs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dtda.stats.bootstrap import bootstrap_indices, bootstrap_intervals
from dtda.stats.estimators import STATISTICS, point_statistics, quantile_key
from dtda.stats.result import Distributional

if TYPE_CHECKING:
    from dtda.samples import SeedSamples

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.9)
#: Statistics that get bootstrap CIs by default ("quantiles" stands for every quantile shift).
DEFAULT_CI: tuple[str, ...] = ("mean", "var_increase", "var_increase_first_order", "w2", "shape_w2",
                               "w2_smoothed", "quantiles")


def distributional(samples: SeedSamples, *, quantiles: Sequence[float] = DEFAULT_QUANTILES,
                   bootstrap: int = 2000, confidence: float = 0.95, seed: int = 0,
                   ci: Sequence[str] = DEFAULT_CI, indices: Tensor | None = None,
                   dtype: torch.dtype | None = torch.float64, memory_mb: float = 256) -> Distributional:
    """Distributional statistics of ``samples`` (m [K, Q], δ [K, N, Q]) for every (n, q).

    - ``quantiles``: levels p of the quantile shifts q̂_p(m+δ) − q̂_p(m).
    - ``bootstrap``: number B of seed resamples for percentile CIs (0: no CIs); ``seed`` seeds the
      resampling generator, ``indices`` [B, K] overrides it with explicit resamples (to pair with
      another computation). The same (K, B, seed) gives the same resamples, for every example and
      every SeedSamples over the same seeds.
    - ``confidence``: CI coverage (0.95 gives the 2.5% and 97.5% percentiles).
    - ``ci``: statistics that get CIs; "quantiles" stands for every quantile shift.
    - ``dtype``: computation and result dtype; float64 by default because the exact variance
      increase and sorted differences cancel when δ is small next to m. None keeps delta's dtype
      (half precision computes in float32).
    - ``memory_mb``: rough bound on the bootstrap's working memory.
    """
    K = samples.K
    if K < 2:
        raise ValueError(f"distributional: needs at least 2 seeds, got K = {K}")
    levels = _levels(quantiles)
    if not 0 < confidence < 1:
        raise ValueError(f"distributional: confidence must be in (0, 1), got {confidence!r}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(
            f"distributional: bootstrap must be a non-negative int (0 = no CIs), got {bootstrap!r}")
    if not memory_mb > 0:
        raise ValueError(f"distributional: memory_mb must be > 0, got {memory_mb!r}")
    ci_names = _ci_names(ci, levels)
    dtype = torch.promote_types(samples.delta.dtype, torch.float32) if dtype is None else dtype
    if not dtype.is_floating_point:
        raise ValueError(f"distributional: dtype must be a floating-point dtype, got {dtype}")
    m, delta = samples.m.to(dtype), samples.delta.to(dtype)
    for arg, t in (("m", m), ("delta", delta)):
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise ValueError(f"distributional: samples.{arg} has {bad} non-finite values (NaN or inf); "
                             f"drop the diverged seeds with samples.subset(seeds=...)")

    point = point_statistics(m, delta, levels)
    intervals: dict[str, Tensor] = {}
    if indices is not None:
        indices = _check_indices(indices, K)
        bootstrap = indices.shape[0]
        seed = None
    elif bootstrap > 0:
        indices = bootstrap_indices(K, bootstrap, seed)
    else:
        seed = None
    if indices is not None and ci_names:
        intervals = bootstrap_intervals(m, delta, indices, levels, ci_names, confidence, memory_mb)

    N, Q = delta.shape[1:]
    shifts = (torch.stack([point[quantile_key(p)] for p in levels]) if levels
              else delta.new_empty((0, N, Q)))
    return Distributional(
        **{name: point[name] for name in STATISTICS}, quantile_shift=shifts, levels=levels,
        names=list(samples.names), K=K, method=samples.method, groups=samples.groups,
        ci=intervals, confidence=confidence, bootstrap=bootstrap, bootstrap_seed=seed)


def _levels(quantiles: Sequence[float]) -> tuple[float, ...]:
    levels = tuple(float(p) for p in quantiles)
    bad = [p for p in levels if not 0 <= p <= 1 or math.isnan(p)]
    if bad:
        raise ValueError(f"distributional: quantile levels must lie in [0, 1], got {list(quantiles)}")
    if len({quantile_key(p) for p in levels}) != len(levels):
        raise ValueError(f"distributional: quantile levels must be distinct, got {list(quantiles)}")
    return levels


def _ci_names(ci: Sequence[str], levels: tuple[float, ...]) -> list[str]:
    if isinstance(ci, str):
        ci = [ci]
    names: list[str] = []
    allowed = list(STATISTICS) + ["quantiles"] + [quantile_key(p) for p in levels]
    for name in ci:
        if name not in allowed:
            raise ValueError(f"distributional: ci has unknown statistic {name!r}; allowed: {allowed}")
        for expanded in ([quantile_key(p) for p in levels] if name == "quantiles" else [name]):
            if expanded not in names:
                names.append(expanded)
    return names


def _check_indices(indices: Tensor, K: int) -> Tensor:
    if not isinstance(indices, Tensor) or indices.dim() != 2 or indices.shape[1] != K or indices.shape[0] < 1:
        shape = list(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
        raise ValueError(
            f"distributional: indices must be a [B, K={K}] integer tensor of seed resamples, got {shape}")
    if indices.dtype not in (torch.int32, torch.int64) or bool(((indices < 0) | (indices >= K)).any()):
        raise ValueError(f"distributional: indices must be integers in [0, {K}), got dtype {indices.dtype}")
    return indices.long()
