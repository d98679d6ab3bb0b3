"""What each registered method declares and the core honours: the Fisher is checked only where a
method (or the "heuristic" damping) uses it, meta reports the damping actually used (SOURCE's
built-in 1/c per segment, not the ignored rule), and methods that prefit curvature at several
parameter points (SOURCE, CG with the EK-FAC preconditioner) give, for K seeds fitted together,
the numbers of one seed at a time (float64)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dtda
import dtda.train as T
from dtda.attribute.influence import METHODS
from dtda.train.ensemble import Ensemble

N, WD = 12, 1e-2


def _custom_loss(out, y):
    return F.cross_entropy(out, y, reduction="none")


def _recipe(loss="cross_entropy"):
    return T.Recipe(lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)), loss,
                    T.SGD(0.2, momentum=0.5, weight_decay=WD), batch_size=4, epochs=3, checkpoint_every=3,
                    dtype=torch.float64)


@pytest.fixture(scope="module")
def custom(data):
    train, measure = data
    return T.train_ensemble(_recipe(_custom_loss), train, seeds=[0]), measure


@pytest.mark.parametrize("method, options", [("exact", {}), ("cg", {}), ("lissa", {"iterations": 5})])
def test_product_methods_take_a_custom_loss_with_any_fisher(custom, method, options):
    """exact, cg and lissa use GGN/Hessian products: fisher="true" with a custom loss is no error,
    and meta does not claim a Fisher was used."""
    ens, measure = custom
    got = dtda.influence(ens, measure, method=method, damping=0.1, fisher="true", **options)
    assert got.meta["fisher"] is None and got.meta["fisher_used_for"] == []
    same = dtda.influence(ens, measure, method=method, damping=0.1, fisher="empirical", **options)
    assert torch.equal(got.delta, same.delta)


@pytest.mark.parametrize("method, options", [
    ("diagonal", {}), ("kfac", {}), ("ekfac", {}), ("astra", {}), ("source", {}), ("cg", {"precondition": "ekfac"}),
])
def test_fisher_methods_still_reject_true_fisher_with_custom_loss(custom, method, options):
    ens, measure = custom
    with pytest.raises(ValueError, match="fisher='empirical'"):
        dtda.influence(ens, measure, method=method, damping=0.1, **options)


def test_heuristic_damping_uses_the_fisher_and_says_so(custom, data):
    ens, measure = custom
    with pytest.raises(ValueError, match="fisher='empirical'"):   # 0.1·tr(F)/d needs the sampled Fisher
        dtda.influence(ens, measure, method="exact", damping="heuristic")
    got = dtda.influence(ens, measure, method="exact", damping="heuristic", fisher="empirical")
    assert got.meta["fisher"] == "empirical" and got.meta["fisher_used_for"] == ["damping"]
    assert got.meta["damping"]["rule"] == "heuristic" and got.meta["damping"]["value"][0] > 0
    train, _ = data
    ekfac = dtda.influence(T.train_ensemble(_recipe(), train, seeds=[0]), measure, method="ekfac",
                           damping="heuristic")
    assert ekfac.meta["fisher_used_for"] == ["method", "damping"]
    # astra's λ is one number (its EK-FAC only preconditions): no per-layer values reported
    astra = dtda.influence(T.train_ensemble(_recipe(), train, seeds=[0]), measure, method="astra",
                           damping="heuristic", iterations=2)
    assert astra.meta["damping"]["layers"] is None and ekfac.meta["damping"]["layers"] is not None


def test_source_meta_reports_its_built_in_damping(data):
    train, measure = data
    ens = T.train_ensemble(_recipe(), train, seeds=[0, 1])
    for requested in ("training-time", 0.5):
        got = dtda.influence(ens, measure, method="source", damping=requested)
        d = got.meta["damping"]
        assert d["rule"] == "built-in" and d["ignored"] == requested and d["layers"] is None
        cs = [[seg["c"] for seg in seed["segments"]] for seed in got.meta["seeds"]]
        assert d["value"] == [[1.0 / c for c in per_seed] for per_seed in cs]
    assert got.meta["fisher"] == "true" and got.meta["fisher_used_for"] == ["method"]
    assert torch.equal(got.delta, dtda.influence(ens, measure, method="source").delta)


@pytest.mark.parametrize("method, options", [
    ("source", {"fisher": "empirical"}), ("source", {"average": "checkpoints"}),
    ("cg", {"precondition": "ekfac", "damping": 0.1, "max_iter": 3}),
])
def test_seeds_fitted_together_equal_one_at_a_time(data, method, options):
    train, measure = data
    ens = T.train_ensemble(_recipe(), train, seeds=[0, 1, 2])
    together = dtda.influence(ens, measure, method=method, **options)
    for i, member in enumerate(ens.members):
        alone = dtda.influence(Ensemble(ens.recipe, ens.data, [member]), measure, method=method, **options)
        torch.testing.assert_close(together.delta[i], alone.delta[0], rtol=1e-10, atol=1e-14)
        mine, single = together.meta["seeds"][i], alone.meta["seeds"][0]
        assert mine.get("segments") == single.get("segments") and mine.get("iterations") == single.get("iterations")


def test_every_method_declares_its_curvature_use():
    for name, spec in METHODS.items():
        defaults = dict(spec.options)
        assert isinstance(spec.fisher_uses(defaults, 0.1), list), name
    assert METHODS["identity"].damping == "none" and METHODS["source"].damping == "built-in"
    assert METHODS["source"].prefit is not None
    assert METHODS["cg"].kronecker_kind({"precondition": "ekfac"}) == "ekfac"
    assert METHODS["cg"].kronecker_kind({"precondition": None}) is None
