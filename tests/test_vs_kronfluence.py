"""benchmarks/vs_kronfluence.py: its dtda side always runs; against Kronfluence only where installed."""

import pytest
import torch

from benchmarks import vs_kronfluence as bench
from benchmarks.common import Timeline


@pytest.mark.parametrize("case", bench.CASES)
def test_dtda_side_runs_with_every_stage_marked(case):
    s = bench.setup(case, quick=True)
    timeline = Timeline()
    scores, info = bench.run_dtda(s, bench.DAMPING[case], timeline)  # raises if a stage hook went unused
    timeline.close()
    assert scores.shape == (len(s.Xq), s.N) and scores.dtype == torch.float64
    assert torch.isfinite(scores).all() and scores.abs().max() > 0
    assert info["mean_eigenvalue"] > 0
    assert set(timeline.seconds) == set(bench.STAGES)


def test_agreement_of_identical_and_of_reordered_scores():
    a = torch.randn(3, 40, dtype=torch.float64)
    same = bench.agreement(a, 2.0 * a)  # a positive scale changes no statistic
    assert same["pearson"] == pytest.approx(1.0) and same["min_query_pearson"] == pytest.approx(1.0)
    assert same["median_query_spearman"] == pytest.approx(1.0) and same["top10_overlap"] == 1.0
    flipped = bench.agreement(a, -a)
    assert flipped["pearson"] == pytest.approx(-1.0) and flipped["top10_overlap"] == 1.0  # top-10 by |score|


@pytest.mark.parametrize("case", bench.CASES)
def test_quick_comparison_agrees_with_kronfluence(case):
    why = bench.kronfluence_unavailable()
    if why:
        pytest.skip(f"Kronfluence is not installed here (benchmark-only): {why}")
    s = bench.setup(case, quick=True)
    ours, _ = bench.run_dtda(s, bench.DAMPING[case])
    theirs, _ = bench.run_kronfluence(s, bench.DAMPING[case], Timeline())
    agree = bench.agreement(ours, theirs)
    # Same EK-FAC, damping and scale (N·δᵀ = Kronfluence's score); float32 sums in both tools.
    assert agree["pearson"] >= 0.999 and agree["min_query_pearson"] >= 0.999
    assert agree["top10_overlap"] >= 0.9
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-3 * float(theirs.abs().max()))
