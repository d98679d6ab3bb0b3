"""Seed-bootstrap CIs: coverage in a simple case, determinism, pairing, chunking invariance."""

import pytest
import torch
from synthetic import make_samples

from dtda.stats import bootstrap_indices, distributional
from dtda.stats.estimators import sorted_quantiles
from dtda.samples import SeedSamples


def test_mean_ci_covers_the_truth():
    # δ_s(n) = 0.3 + N(0, 1) noise, 200 independent examples: the 95% CI of the mean should
    # contain 0.3 for about 95% of them (binomial sd ≈ 1.5%; the percentile bootstrap
    # under-covers slightly at K = 40).
    g = torch.Generator().manual_seed(3)
    K, N = 40, 200
    m = torch.randn(K, 1, generator=g, dtype=torch.float64)
    delta = 0.3 + torch.randn(K, N, 1, generator=g, dtype=torch.float64)
    s = SeedSamples(m, delta, list(range(K)), ["loss"], "synthetic")
    d = distributional(s, bootstrap=400, seed=1, ci=("mean",))
    lo, hi = d.ci["mean"][0, :, 0], d.ci["mean"][1, :, 0]
    coverage = ((lo <= 0.3) & (0.3 <= hi)).double().mean().item()
    assert 0.88 <= coverage <= 0.99
    assert bool((lo <= d.mean[:, 0]).all() and (d.mean[:, 0] <= hi).all())


def test_deterministic_and_bit_identical(samples):
    a = distributional(samples, bootstrap=64, seed=7)
    b = distributional(samples, bootstrap=64, seed=7)
    c = distributional(samples, bootstrap=64, seed=8)
    assert set(a.ci) == {"mean", "var_increase", "var_increase_first_order", "w2", "shape_w2",
                         "w2_smoothed", "quantile_0.1", "quantile_0.5", "quantile_0.9"}
    for name in a.ci:
        assert torch.equal(a.ci[name], b.ci[name])
    assert not torch.equal(a.ci["mean"], c.ci["mean"])
    assert torch.equal(bootstrap_indices(12, 64, 7), bootstrap_indices(12, 64, 7))


def test_chunking_does_not_change_results():
    # A tiny memory budget forces one example and one resample per chunk.
    samples = make_samples(N=3, Q=2)
    big = distributional(samples, bootstrap=12, seed=2, ci=("mean", "w2", "quantiles"))
    small = distributional(samples, bootstrap=12, seed=2, ci=("mean", "w2", "quantiles"), memory_mb=1e-6)
    for name in big.ci:
        torch.testing.assert_close(small.ci[name], big.ci[name], rtol=1e-12, atol=1e-15)


def test_ci_is_the_percentile_of_explicit_resamples(samples):
    # Recompute every resample by hand with the same indices and take the percentiles.
    idx = bootstrap_indices(samples.K, 30, 5)
    d = distributional(samples, indices=idx, ci=("w2", "var_increase"))
    assert d.bootstrap == 30 and d.bootstrap_seed is None
    w2 = torch.stack([distributional(SeedSamples(samples.m[i], samples.delta[i], list(range(samples.K)),
                                                 samples.names, "x"), bootstrap=0).w2 for i in idx])
    expect = sorted_quantiles(w2.sort(0).values, (0.025, 0.975), dim=0)
    torch.testing.assert_close(d.ci["w2"], expect, rtol=1e-12, atol=1e-15)


def test_shared_resamples_keep_methods_paired(samples):
    # Two methods over the same seeds with the same (B, seed) see the same resamples: the CI of
    # a statistic of (δ + c) is the CI of δ shifted by c, exactly paired.
    shifted = SeedSamples(samples.m, samples.delta + 0.5, samples.seeds, samples.names, "other")
    a = distributional(samples, bootstrap=40, seed=3, ci=("mean",))
    b = distributional(shifted, bootstrap=40, seed=3, ci=("mean",))
    torch.testing.assert_close(b.ci["mean"], a.ci["mean"] + 0.5, rtol=1e-12, atol=1e-12)


def test_bad_options(samples):
    with pytest.raises(ValueError, match="bootstrap must be a non-negative int"):
        distributional(samples, bootstrap=-1)
    with pytest.raises(ValueError, match="confidence must be in"):
        distributional(samples, confidence=1.5)
    with pytest.raises(ValueError, match="unknown statistic 'nope'"):
        distributional(samples, ci=("nope",))
    with pytest.raises(ValueError, match=r"indices must be a \[B, K=12\]"):
        distributional(samples, indices=torch.zeros(5, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="quantile levels must lie in"):
        distributional(samples, quantiles=(1.5,))
    bad = SeedSamples(samples.m, samples.delta.clone(), samples.seeds, samples.names, "x")
    bad.delta[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="samples.delta has 1 non-finite values"):
        distributional(bad)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        distributional(samples.subset([100]))


def test_no_bootstrap_means_no_ci(samples):
    d = distributional(make_samples(K=5), bootstrap=0)
    assert d.ci == {} and d.bootstrap == 0 and d.bootstrap_seed is None
