"""Seed-bootstrap percentile confidence intervals (PAPER.md §7, [D]).

Protocol: draw B resamples of the K seeds with replacement, ``indices`` [B, K], from a seeded
generator; resample m and δ with the *same* indices (the seed pairing is kept); recompute each
statistic on every resample; the CI is the (α/2, 1 − α/2) percentile (linear interpolation) of the
B values, α = 1 − confidence. The same indices serve every example, group and query, and any other
SeedSamples over the same seeds given the same generator seed, so differences stay paired.

Vectorised over (N, Q): a chunk of b resamples is folded into the query axis, so one
:func:`dtda.ops.seed_moments` call over [K, n, b·Q] handles it. Memory is bounded by working
through blocks of examples and chunks of resamples sized from ``memory_mb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dtda.stats.estimators import point_statistics, sorted_quantiles
from dtda.stats.sorting import sort_values

# Live [K, n, b·Q]-sized temporaries per resampled element inside point_statistics (delta, after,
# sorted after, differences, squares...): a generous count so the budget holds.
_TEMPORARIES = 8


def bootstrap_indices(K: int, B: int, seed: int) -> Tensor:
    """Seed resamples: [B, K] int64 indices in [0, K), drawn with replacement.

    A pure function of (K, B, seed) on CPU (``torch.Generator().manual_seed(seed)``), so every
    statistic, example and method that uses the same (K, B, seed) sees the same resamples.
    """
    if K < 1 or B < 1:
        raise ValueError(f"bootstrap_indices: K and B must be >= 1, got K={K}, B={B}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randint(0, K, (B, K), generator=gen, dtype=torch.int64)


def bootstrap_intervals(m: Tensor, delta: Tensor, indices: Tensor, levels: Sequence[float],
                        names: Sequence[str], confidence: float, memory_mb: float) -> dict[str, Tensor]:
    """Percentile CIs of the named statistics under the seed resamples ``indices`` [B, K].

    m: [K, Q]; delta: [K, N, Q]. Returns {name: [2, N, Q]} (lower, upper) in the dtype of delta.
    """
    K, N, Q = delta.shape
    B = indices.shape[0]
    indices = indices.to(delta.device)
    alpha = 1 - confidence
    bounds = (alpha / 2, 1 - alpha / 2)
    item = delta.element_size()
    budget = memory_mb * 2**20
    # Example block: the B values of every statistic for the block are held at once (+ one sort).
    block = int(max(1, min(N, budget / 2 // (2 * B * Q * max(1, len(names)) * item))))
    # Resample chunk: the folded [K, block, b·Q] tensors with their temporaries.
    chunk = int(max(1, min(B, budget / 2 // (_TEMPORARIES * K * block * Q * item))))
    out = {name: delta.new_empty((2, N, Q)) for name in names}
    for n0 in range(0, N, block):
        d = delta[:, n0:n0 + block]
        nb = d.shape[1]
        values = {name: delta.new_empty((nb, Q, B)) for name in names}
        for b0 in range(0, B, chunk):
            idx = indices[b0:b0 + chunk]                                     # [b, K]
            b = idx.shape[0]
            mb = m[idx].permute(1, 0, 2).reshape(K, b * Q)                   # [K, b·Q]
            db = d[idx].permute(1, 2, 0, 3).reshape(K, nb, b * Q)             # [K, nb, b·Q]
            stats = point_statistics(mb, db, levels, names)
            for name in names:
                values[name][..., b0:b0 + b] = stats[name].reshape(nb, b, Q).permute(0, 2, 1)
        for name in names:
            out[name][:, n0:n0 + nb] = sorted_quantiles(sort_values(values[name], -1), bounds)
    return out
