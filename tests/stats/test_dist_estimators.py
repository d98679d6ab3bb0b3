"""Point statistics against closed forms and brute force on synthetic seed samples."""

import itertools
import math

import numpy as np
import pytest
import torch

from dtda.stats import point_statistics, quantile_key
from dtda.stats.sorting import sort_values
from dtda.samples import SeedSamples

from synthetic import make_samples

LEVELS = (0.0, 0.1, 0.25, 0.5, 0.9, 1.0)


def _stats(m, delta, levels=LEVELS):
    return point_statistics(m, delta, levels)


def test_proportional_effect_closed_forms():
    # δ_s = c (m_s − m̄): var(m + δ) = (1 + c)² var(m) exactly, first order 2c var(m).
    g = torch.Generator().manual_seed(1)
    m = torch.randn(9, 4, generator=g, dtype=torch.float64)
    c = torch.tensor([-0.5, 0.1, 0.3], dtype=torch.float64).view(3, 1)
    delta = c * (m - m.mean(0)).unsqueeze(1)                 # [K, 3, Q]
    s = _stats(m, delta)
    var = m.var(0)
    torch.testing.assert_close(s["var_increase"], ((1 + c) ** 2 - 1) * var)
    torch.testing.assert_close(s["var_increase_first_order"], 2 * c * var)
    torch.testing.assert_close(s["mean"], torch.zeros(3, 4, dtype=torch.float64), atol=1e-15, rtol=0)
    # 1 + c > 0 keeps the order: W2 = |c|·sd_pop(m), all of it shape, and smoothed W2 is exact.
    sd_pop = (m - m.mean(0)).square().mean(0).sqrt()
    torch.testing.assert_close(s["w2"], c.abs() * sd_pop)
    torch.testing.assert_close(s["shape_w2"], c.abs() * sd_pop)
    torch.testing.assert_close(s["w2_smoothed"], c.abs() * var.sqrt())
    for p in LEVELS:  # quantiles of an affine map about the mean
        q = torch.quantile(m, p, dim=0)
        torch.testing.assert_close(s[quantile_key(p)], c * (q - m.mean(0)))


def test_constant_effect():
    g = torch.Generator().manual_seed(2)
    m = torch.randn(10, 3, generator=g, dtype=torch.float64)
    c = torch.tensor([-0.25, 0.0, 2.0], dtype=torch.float64).view(1, 3, 1).expand(10, 3, 3)
    s = _stats(m, c.contiguous())
    cc = c[0]
    torch.testing.assert_close(s["mean"], cc)
    torch.testing.assert_close(s["var_increase"], torch.zeros_like(cc), atol=1e-14, rtol=0)
    torch.testing.assert_close(s["var_increase_first_order"], torch.zeros_like(cc), atol=1e-15, rtol=0)
    torch.testing.assert_close(s["w2"], cc.abs())
    torch.testing.assert_close(s["shape_w2"], torch.zeros_like(cc), atol=1e-7, rtol=0)
    torch.testing.assert_close(s["w2_smoothed"], cc.abs())
    for p in LEVELS:
        torch.testing.assert_close(s[quantile_key(p)], cc)
    assert torch.equal(s["sign_agreement"], torch.ones_like(cc))
    # Zero spread: z is ±inf for a nonzero mean (p = 0) and 0 for a zero mean (p = 1).
    assert s["z"][:, 0].tolist() == [-math.inf, 0.0, math.inf]
    assert s["p"][:, 0].tolist() == [0.0, 1.0, 0.0] and s["p_t"][:, 0].tolist() == [0.0, 1.0, 0.0]


def _w2_brute(x: torch.Tensor, y: torch.Tensor) -> float:
    """min over couplings (permutations, for equal-weight samples) of the mean squared distance."""
    K = len(x)
    best = min(sum((x[i] - y[j]) ** 2 for i, j in enumerate(perm))
               for perm in itertools.permutations(range(K)))
    return math.sqrt(best / K)


@pytest.mark.parametrize("K", [2, 3, 5, 6])
def test_w2_equals_brute_force_optimal_transport(K):
    s = make_samples(K=K, N=4, Q=2, scale=1.0, seed=K)
    st = _stats(s.m, s.delta)
    for n in range(4):
        for q in range(2):
            x = s.m[:, q].tolist()
            y = (s.m[:, q] + s.delta[:, n, q]).tolist()
            assert st["w2"][n, q].item() == pytest.approx(_w2_brute(x, y), rel=1e-12)


def test_w2_split_and_bounds(samples):
    s = _stats(samples.m, samples.delta)
    torch.testing.assert_close(s["w2"].square(), s["mean"].square() + s["shape_w2"].square())
    tol = 1e-12
    assert bool((s["w2_lower"] <= s["w2"] + tol).all()), "Gelbrich lower bound violated"
    assert bool((s["w2"] <= s["w2_upper"] + tol).all()), "paired-coupling upper bound violated"
    assert bool((s["mean"].abs() <= s["w2"] + tol).all())


def test_moments_and_tests_by_hand(samples):
    m, d = samples.m, samples.delta
    s = _stats(m, d)
    K = m.shape[0]
    n, q = 3, 1
    dv = d[:, n, q].tolist()
    mv = m[:, q].tolist()
    mean = sum(dv) / K
    var_d = sum((v - mean) ** 2 for v in dv) / (K - 1)
    m_bar = sum(mv) / K
    cov = sum((a - m_bar) * (b - mean) for a, b in zip(mv, dv)) / (K - 1)
    z = mean / math.sqrt(var_d)
    assert s["mean"][n, q].item() == pytest.approx(mean, rel=1e-12)
    assert s["cov"][n, q].item() == pytest.approx(cov, rel=1e-12)
    assert s["delta_var"][n, q].item() == pytest.approx(var_d, rel=1e-12)
    assert s["var_increase"][n, q].item() == pytest.approx(2 * cov + var_d, rel=1e-10)
    assert s["z"][n, q].item() == pytest.approx(z, rel=1e-12)
    assert s["p"][n, q].item() == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-12)
    assert s["t"][n, q].item() == pytest.approx(math.sqrt(K) * z, rel=1e-12)
    agree = sum(math.copysign(1, v) == math.copysign(1, mean) for v in dv) / K
    assert s["sign_agreement"][n, q].item() == pytest.approx(agree)
    upper = math.sqrt(sum(v * v for v in dv) / K)
    assert s["w2_upper"][n, q].item() == pytest.approx(upper, rel=1e-12)


def test_t_p_value_against_scipy_when_available(samples):
    stats = pytest.importorskip("scipy.stats")
    s = _stats(samples.m, samples.delta)
    expect = 2 * stats.t.sf(np.abs(s["t"].numpy()), samples.K - 1)
    np.testing.assert_allclose(s["p_t"].numpy(), expect, rtol=1e-10)


def test_quantile_shifts_match_numpy_linear(samples):
    s = _stats(samples.m, samples.delta)
    after = (samples.m.unsqueeze(1) + samples.delta).numpy()
    for p in LEVELS:
        expect = np.quantile(after, p, axis=0) - np.quantile(samples.m.numpy(), p, axis=0)[None]
        np.testing.assert_allclose(s[quantile_key(p)].numpy(), expect, rtol=1e-12, atol=1e-14)


def test_wanted_subset_and_float32(samples):
    s64 = _stats(samples.m, samples.delta)
    part = point_statistics(samples.m, samples.delta, (0.5,), ["shape_w2", "quantile_0.5"])
    assert {"shape_w2", "quantile_0.5", "mean", "w2"} <= set(part) and "p_t" not in part
    assert torch.equal(part["shape_w2"], s64["shape_w2"])
    s32 = _stats(samples.m.float(), samples.delta.float())
    assert all(v.dtype == torch.float32 for v in s32.values())
    torch.testing.assert_close(s32["w2"].double(), s64["w2"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("dim", [0, -1])
def test_sort_values_equals_torch_sort(dtype, dim):
    x = torch.randn(16, 5, 11).to(dtype)
    x[:, 0, 0] = 1.0                   # ties
    x[3, 1, 2] = x[0, 4, 4] = math.nan  # NaN sorts last on both paths
    assert torch.equal(sort_values(x, dim).nan_to_num(7.0), x.sort(dim).values.nan_to_num(7.0))
    sub = x[:, :, ::2]                  # non-contiguous
    assert torch.equal(sort_values(sub, dim).nan_to_num(7.0), sub.sort(dim).values.nan_to_num(7.0))


def test_statistics_are_shift_invariant(samples):
    # Adding a constant per query to every m leaves every after − before statistic unchanged.
    s = _stats(samples.m, samples.delta)
    moved = _stats(samples.m + torch.tensor([1.0, -3.0, 0.5], dtype=torch.float64), samples.delta)
    for name in ("mean", "var_increase", "w2", "shape_w2", "w2_smoothed", "quantile_0.9", "z", "p_t"):
        torch.testing.assert_close(moved[name], s[name], rtol=1e-9, atol=1e-12)


def test_seedsamples_is_input(samples):
    assert isinstance(samples, SeedSamples)
