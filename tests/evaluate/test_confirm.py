"""confirm: predicted against actual, the floor from null controls, verdicts."""

import pytest
import torch

from dtda.evaluate import confirm
from dtda.evaluate.confirm import judge

STATUSES = {"confirmed", "sign", "magnitude-off", "sign-contradicted", "unresolved", "not-confirmed", "below-floor"}


@pytest.mark.parametrize("args, status", [
    ((1.0, 0.9, 0.8, 1.0, 0.1, True), "confirmed"),
    ((1.0, 3.0, 2.5, 3.5, 0.1, True), "sign"),
    ((-1.0, 0.9, 0.8, 1.0, 0.1, True), "sign-contradicted"),
    ((0.01, 0.02, -0.05, 0.09, 0.1, True), "below-floor"),
    ((1.0, 0.02, -0.05, 0.09, 0.1, True), "not-confirmed"),
    ((0.5, 0.4, -0.05, 0.9, 0.1, True), "unresolved"),
    ((0.5, 0.6, 0.3, 0.9, 0.2, False), "confirmed"),
    ((1.5, 0.6, 0.1, 0.9, 0.2, False), "not-confirmed"),
])
def test_verdict_rules(args, status):
    assert judge(*args, tolerance=2.0, seeds=8).status == status


def test_masked_confirm_on_smooth_training(linear):
    p = linear
    res = confirm(p.samples, p.recipe, p.train, p.measure, examples=[0, 3], bootstrap=200)
    assert res.groups == [[0, 3]] and len(res.rows()) == p.samples.Q
    # Float64 linear regression trains smoothly: the tiny control's difference quotient is the
    # derivative δ_s itself, and the mean shifts of removing 2 of 16 examples agree to 20%
    # (measured: within 2%); per seed, second-order terms show (measured r = −0.46, 0.97, 1.00).
    assert (res.quotient_corr > 0.999).all() and res.per_seed_corr.shape == (1, 3)
    assert torch.allclose(res.pred_stats.mean, res.actual_stats.mean, rtol=0.2)
    for row in res.rows():
        assert {row[s]["verdict"] for s in ("mean", "var_increase", "w2")} <= STATUSES
        assert row["mean"]["verdict"] in ("confirmed", "below-floor"), row["line"]
    assert set(res.controls) == {"tiny", "random"}
    assert "without examples 0, 3" in str(res)


def test_subset_confirm_each_example_with_more_seeds(linear):
    p = linear
    res = confirm(p.samples, p.recipe, p.train, p.measure, examples=[2, 9], each=True, seeds=5, mode="subset",
                  controls=["random"], bootstrap=100)
    assert res.groups == [[2], [9]] and res.actual.seeds == [0, 1, 2, 3, 4] and res.predicted.K == 4
    assert res.per_seed_corr is None and res.quotient_corr is None
    assert res.to_dict()["rows"][0]["measurement"] == p.samples.names[0]


def test_confirm_refuses_bad_arguments(linear):
    p = linear
    with pytest.raises(ValueError, match="controls must be"):
        confirm(p.samples, p.recipe, p.train, p.measure, examples=[0], controls=["placebo"])
    with pytest.raises(ValueError, match=r"indices must be in \[0, N=16\)"):
        confirm(p.samples, p.recipe, p.train, p.measure, examples=[99])
