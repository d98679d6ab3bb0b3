"""Linearised and non-linear predictions from forward mode."""

import torch

import dtda
from dtda.evaluate.predict import predictions


def test_both_predictions_agree_with_reverse_mode_and_each_other_for_a_linear_measurement(linear):
    p = linear
    ens = dtda.train_ensemble(p.recipe, p.train, 2)
    groups = [[0], [3, 7]]
    got = predictions(ens, p.measure, groups)
    reverse = p.samples.subset([0, 1]).group(groups)
    assert torch.allclose(got["linear"].delta, reverse.delta, atol=1e-10)
    # A linear model's output is linear in θ: re-evaluating at θ + Δθ changes nothing.
    assert torch.allclose(got["nonlinear"].delta, got["linear"].delta, atol=1e-12)
    assert got["nonlinear"].groups == groups and got["nonlinear"].method == "unroll-forward-nonlinear"


def test_nonlinear_differs_for_a_curved_measurement(linear):
    p = linear
    ens = dtda.train_ensemble(p.recipe, p.train, 1)
    X = p.measure.X
    curved = dtda.measure.custom(lambda model: model(X).reshape(-1) ** 2)
    got = predictions(ens, curved, [[0, 1, 2]])
    lin, nonlin = got["linear"].delta, got["nonlinear"].delta
    # m = f², so m(θ+Δθ) − m(θ) = 2fδf + δf² = linear + δf²: the difference is the square term.
    df = predictions(ens, p.measure, [[0, 1, 2]])["linear"].delta
    assert torch.allclose(nonlin - lin, df.square(), atol=1e-12)
