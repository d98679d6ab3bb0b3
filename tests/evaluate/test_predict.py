"""Linearised, non-linear and second-order predictions from forward mode."""

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


def _two_step_problem(widths=(), steps=2):
    """A float64 regression trained ``steps`` SGD steps (momentum, weight decay), one seed, and a
    group with one example of the first batch and one of the second (so they interact)."""
    from tests.evaluate.conftest import regression
    import dtda.train as T
    from dtda.models import MLP

    train, (Xq, _) = regression()
    recipe = T.Recipe(MLP(2, widths, 1, "tanh"), "mse", T.SGD(0.1, momentum=0.5, weight_decay=0.01), 4,
                      steps=steps, dtype=torch.float64)
    ens = dtda.train_ensemble(recipe, train, 1)
    batches = ens.members[0].record.batches
    return recipe, train, dtda.measure.output(Xq), ens, [int(batches[0][0]), int(batches[1][0])]


def _masked(recipe, train, measure, group, weight=0.0):
    """m of seed 0 retrained with the group's weight set to ``weight`` (same batches)."""
    w = torch.ones(len(train[0]), dtype=torch.float64)
    w[group] = weight
    with torch.no_grad():
        return measure(dtda.retrain(recipe, train, [0], weights=w).model(0))


def test_second_order_is_exact_where_the_measurement_is_quadratic_in_the_weights():
    # A linear model trained two steps: θ_1 is linear in the weights w, θ_2 = θ_1 − η(μg_0 + g_1(w, θ_1))
    # is quadratic, and so is m = xᵀθ_2; the second-order prediction is the masked retraining.
    recipe, train, measure, ens, group = _two_step_problem()
    got = predictions(ens, measure, [group, group[:1]])
    actual = _masked(recipe, train, measure, group) - got["linear"].m[0]
    assert torch.allclose(got["second_order"].delta[0, 0], actual, atol=1e-12)
    assert (got["linear"].delta[0, 0] - actual).abs().max() > 1e-6  # first order is not exact here
    # a single example of the first batch: θ_1 linear and g_1 only through θ_1: still quadratic, exact
    single = _masked(recipe, train, measure, group[:1]) - got["linear"].m[0]
    assert torch.allclose(got["second_order"].delta[0, 1], single, atol=1e-12)
    assert got["second_order"].method == "unroll-forward-second_order"


def test_second_order_term_matches_a_finite_difference_of_masked_retraining():
    # tanh MLP, 6 steps: d²m/dε² against the central second difference of m(w = 1 − ε𝟙_G).
    from dtda.attribute import forward_member

    recipe, train, measure, ens, group = _two_step_problem(widths=(5,), steps=6)
    res = forward_member(recipe, train, ens.members[0], measure, [group], order=2)
    h = 1e-3
    plus, minus = _masked(recipe, train, measure, group, 1 - h), _masked(recipe, train, measure, group, 1 + h)
    second = (plus - 2 * res.m + minus) / h ** 2
    assert torch.allclose(res.delta2[0], second, rtol=1e-4, atol=1e-8), (res.delta2[0], second)
    assert torch.allclose(res.delta[0], (plus - minus) / (2 * h), rtol=1e-5, atol=1e-10)
    first = forward_member(recipe, train, ens.members[0], measure, [group])
    assert first.delta2 is None and torch.allclose(first.delta, res.delta, atol=1e-14)  # the same first order


def test_second_order_can_be_left_out():
    recipe, train, measure, ens, group = _two_step_problem()
    assert set(predictions(ens, measure, [group], second_order=False)) == {"linear", "nonlinear"}
