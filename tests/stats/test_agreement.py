"""Method agreement: rank correlations against brute-force definitions, and the agreement table."""

import pytest
import torch
from synthetic import make_samples

from dtda.samples import SeedSamples
from dtda.stats.agreement import AGREEMENT, agreement
from dtda.stats.correlation import ranks, spearman


def _brute_ranks(x: list[float]) -> list[float]:
    """Average ranks 1..n by counting: rank = 1 + #smaller + (#equal − 1)/2."""
    return [1 + sum(y < v for y in x) + (sum(y == v for y in x) - 1) / 2 for v in x]


@pytest.mark.parametrize("values", [[3.0, 1.0, 2.0], [1.0, 1.0, 1.0], [2.0, 5.0, 2.0, 0.0, 5.0, 5.0], [7.0]])
def test_average_ranks_match_counting(values):
    got = ranks(torch.tensor(values))
    assert got.tolist() == _brute_ranks(values)


def test_average_ranks_along_a_dimension():
    x = torch.tensor([[1.0, 9.0], [1.0, 3.0], [0.0, 3.0]])
    assert ranks(x, dim=0).T.tolist() == [_brute_ranks([1.0, 1.0, 0.0]), _brute_ranks([9.0, 3.0, 3.0])]


def test_spearman_is_pearson_of_ranks_and_invariant_to_monotone_maps():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 3, generator=g, dtype=torch.float64)
    b = a + 0.5 * torch.randn(50, 3, generator=g, dtype=torch.float64)
    rho = spearman(a, b)
    assert torch.allclose(spearman(a.exp(), b ** 3), rho)
    ra, rb = ranks(a), ranks(b)
    n = a.shape[0]
    d2 = (ra - rb).square().sum(0)
    assert torch.allclose(rho, 1 - 6 * d2 / (n * (n * n - 1)))  # no ties: the textbook formula


def test_agreement_of_a_method_with_itself_and_with_its_negation():
    s = make_samples(K=9, N=25, Q=2)
    same = agreement(s, s)
    assert set(same) == set(AGREEMENT)
    for name in AGREEMENT:
        assert torch.allclose(same[name], torch.ones(2, dtype=torch.float64)), name
    neg = SeedSamples(s.m, -s.delta, s.seeds, s.names, "negated")
    flipped = agreement(s, neg)
    assert torch.allclose(flipped["spearman_mean"], -torch.ones(2, dtype=torch.float64))
    assert torch.allclose(flipped["median_seed_pearson"], -torch.ones(2, dtype=torch.float64))
    assert torch.allclose(flipped["top10_overlap"], torch.ones(2, dtype=torch.float64))  # |δ̄| ranks agree


def test_agreement_variance_increase_uses_the_exact_sample_identity():
    s = make_samples(K=7, N=6, Q=1)
    other = make_samples(K=7, N=6, Q=1, seed=3)
    other = SeedSamples(s.m, other.delta, s.seeds, s.names, "other")
    exact = [[float((s.m[:, 0] + d.delta[:, n, 0]).var() - s.m[:, 0].var()) for n in range(6)] for d in (s, other)]
    want = spearman(torch.tensor(exact[0]), torch.tensor(exact[1]))
    assert torch.allclose(agreement(s, other)["spearman_var_increase"][0], want)


def test_agreement_refuses_mismatched_samples():
    s = make_samples(K=5, N=4, Q=2)
    with pytest.raises(ValueError, match="same seeds"):
        agreement(s, s.subset(list(reversed(s.seeds))))
    with pytest.raises(ValueError, match="same"):
        agreement(s, s.group([[0, 1], [2]]))


def test_top_overlap_counts_common_indices():
    K, N = 3, 30
    base = torch.arange(N, dtype=torch.float64)
    a = SeedSamples(torch.zeros(K, 1, dtype=torch.float64), base[None, :, None].expand(K, N, 1).clone(), [0, 1, 2],
                    ["q"], "a")
    perm = base.clone()
    perm[[29, 0]] = perm[[0, 29]]  # the largest leaves the top 10, the smallest enters it
    b = SeedSamples(a.m, perm[None, :, None].expand(K, N, 1).clone(), [0, 1, 2], ["q"], "b")
    assert agreement(a, b)["top10_overlap"].item() == pytest.approx(0.9)
