"""How two attribution methods agree on the same seeds: the paper's question "what do influence
functions sample?" asked of a user's own run.

For a reference method (e.g. exact unrolling) and another (e.g. EK-FAC influence) computed on the
same K seeds, N examples and Q measurements, per measurement q:

- ``spearman_mean``: Spearman correlation over examples of the mean shifts δ̄(k) = (1/K)Σ_s δ_s(k).
- ``spearman_var_increase``: Spearman over examples of the variance increases
  var̂(m + δ(k)) − var̂(m) (exact sample identity, ddof 1).
- ``median_seed_pearson``: the median over seeds of the Pearson correlation over examples of
  δ_s(·) (does each seed's influence function sample that seed's unrolled effect?).
- ``top10_overlap``: the share of the 10 largest |δ̄| examples the two methods have in common.
"""

from __future__ import annotations

from torch import Tensor

from dtda.samples import SeedSamples
from dtda.stats.correlation import pearson, spearman

AGREEMENT = ("spearman_mean", "spearman_var_increase", "median_seed_pearson", "top10_overlap")


def _variance_increase(s: SeedSamples) -> Tensor:
    """var̂(m + δ) − var̂(m) per (n, q), ddof 1: [N, Q]."""
    m = s.m.double()[:, None, :]
    return (m + s.delta.double()).var(0) - m.var(0)


def _top_overlap(a: Tensor, b: Tensor, k: int) -> Tensor:
    """Share of common indices among the k largest |a| and |b| per column: [Q]."""
    k = min(k, a.shape[0])
    ta = a.abs().topk(k, dim=0).indices
    tb = b.abs().topk(k, dim=0).indices
    common = (ta[:, None, :] == tb[None, :, :]).any(1).sum(0)
    return common.double() / k


def agreement(reference: SeedSamples, other: SeedSamples) -> dict[str, Tensor]:
    """Agreement statistics (:data:`AGREEMENT`) of ``other`` with ``reference``, each [Q].

    Both must hold the same seeds (same order), the same removal units and measurements.
    """
    if reference.seeds != other.seeds:
        raise ValueError(f"agreement: the two samples must hold the same seeds in the same order, got "
                         f"{reference.seeds} and {other.seeds}")
    if reference.delta.shape != other.delta.shape or reference.names != other.names:
        raise ValueError(f"agreement: the two samples must have the same [K, N, Q] and measurement names, got "
                         f"{list(reference.delta.shape)} and {list(other.delta.shape)}")
    ref, oth = reference.delta.double(), other.delta.double()
    per_seed = pearson(ref, oth, dim=1)  # [K, Q]
    return {
        "spearman_mean": spearman(ref.mean(0), oth.mean(0)),
        "spearman_var_increase": spearman(_variance_increase(reference), _variance_increase(other)),
        "median_seed_pearson": per_seed.nanmedian(0).values,
        "top10_overlap": _top_overlap(ref.mean(0), oth.mean(0), 10),
    }
