"""Synthetic paired seed samples shared by the statistics tests."""

import torch

from dtda.samples import SeedSamples


def make_samples(K: int = 12, N: int = 7, Q: int = 3, seed: int = 0, scale: float = 0.1,
                 dtype: torch.dtype = torch.float64) -> SeedSamples:
    """m ~ N(0, 1); δ = a (m − m̄) + b + noise with per-(n, q) a, b, so every statistic varies."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(K, Q, generator=g, dtype=dtype)
    a = torch.randn(N, Q, generator=g, dtype=dtype)
    b = torch.randn(N, Q, generator=g, dtype=dtype)
    noise = torch.randn(K, N, Q, generator=g, dtype=dtype)
    delta = scale * (a * (m - m.mean(0)).unsqueeze(1) + b + noise)
    return SeedSamples(m, delta, list(range(100, 100 + K)), [f"q{i}" for i in range(Q)], "synthetic",
                       meta={"seed": seed})
