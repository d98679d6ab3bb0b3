"""dtda.influence against brute-force oracles (per-example gradients by autograd in a loop, dense
Kronecker matrices), its sign (m = ℓ_k raises on removing k), damping rules, batched seeds, the
SeedSamples it returns, and one clear error per bad input (float64)."""

import pytest
import torch
import torch.nn.functional as F
from curvature_oracle import dense_kronecker_solve, layer_inputs, per_example_gradients
from torch import nn

import dtda
import dtda.measure as M
import dtda.train as T
from dtda.curvature import find_layers, fit
from dtda.train.ensemble import Ensemble
from dtda.train.seeds import stream_seed

N, WD = 12, 1e-2


def _model():
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))


def _recipe(**kw):
    kw.setdefault("optimizer", T.SGD(0.2, momentum=0.9, weight_decay=WD))
    return T.Recipe(model=kw.pop("model", _model), loss=kw.pop("loss", "cross_entropy"), batch_size=4,
                    epochs=3, dtype=torch.float64, **kw)


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(N + 2, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (N + 2,), generator=gen)
    ens = T.train_ensemble(_recipe(), (X[:N], y[:N]), seeds=[0, 1])
    return ens, M.loss(X[N:], y[N:])


def _oracle_terms(ens, measure, i):
    """(per-example gradients name -> [N, *shape], ∇m name -> [Q, *shape], module) of member i."""
    module = ens.recipe.build(ens.seeds[i]).eval()
    params = ens.members[i].params
    grads = per_example_gradients(module, params, ens.data.X, ens.data.y, ens.recipe.loss_fn)
    jac = torch.func.jacrev(lambda p: measure.functional(p, {}, module))(params)
    return grads, jac, module, params


def _dot(u, grads):
    """[N, Q] = Σ_params ⟨∇ℓ_n, u_q⟩ / N."""
    return sum(torch.einsum("n...,q...->nq", grads[k], u[k]) for k in u) / N


def test_identity_is_gradient_dot_product_over_n(setup):
    ens, measure = setup
    got = dtda.influence(ens, measure, method="identity")
    assert got.method == "influence-identity" and got.meta["damping"]["rule"] is None
    for i in range(2):
        grads, jac, _, params = _oracle_terms(ens, measure, i)
        torch.testing.assert_close(got.delta[i], _dot(jac, grads), rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(got.m[i], measure.functional(params, {}, ens.recipe.build(0)))


@pytest.mark.parametrize("method", ["kfac", "ekfac"])
def test_kronecker_scores_equal_dense_oracle(setup, method):
    ens, measure = setup
    got = dtda.influence(ens, measure, method=method, damping=0.05, fisher="empirical", batch_size=5)
    assert got.meta["damping"]["value"] == [0.05, 0.05] and got.meta["weight_decay"] == WD
    for i in range(2):
        grads, jac, module, params = _oracle_terms(ens, measure, i)
        u = {}
        for layer in find_layers(module):
            a = layer_inputs(module, params, layer.module, ens.data.X)
            P = dense_kronecker_solve(layer.matrix(grads), a, layer.matrix(jac), method, WD + 0.05)
            u.update(layer.split(P))
        torch.testing.assert_close(got.delta[i], _dot(u, grads), rtol=1e-9, atol=1e-13)


def test_diagonal_equals_explicit(setup):
    ens, measure = setup
    got = dtda.influence(ens, measure, method="diagonal", damping=0.1, fisher="empirical")
    grads, jac, _, _ = _oracle_terms(ens, measure, 0)
    u = {k: jac[k] / (grads[k].square().mean(0) + WD + 0.1) for k in jac}
    torch.testing.assert_close(got.delta[0], _dot(u, grads), rtol=1e-10, atol=1e-14)


def test_self_effect_is_positive_and_reruns_are_identical(setup):
    ens, _ = setup
    self_loss = M.loss(ens.data.X[:4], ens.data.y[:4])
    got = dtda.influence(ens, self_loss)                       # ekfac, true Fisher, training-time
    diag = torch.diagonal(got.delta[:, :4, :], dim1=1, dim2=2)  # δ_s(k, m = ℓ_k)
    assert bool((diag > 0).all()), diag
    assert torch.equal(got.delta, dtda.influence(ens, self_loss).delta)


def test_training_time_damping_and_heuristic(setup):
    ens, measure = setup
    got = dtda.influence(ens, measure, method="kfac")
    lrs = [ens.recipe.lr(t, ens.members[0].record.steps) for t in range(ens.members[0].record.steps)]
    assert got.meta["damping"]["rule"] == "training-time"
    assert got.meta["damping"]["value"][0] == pytest.approx((1 - 0.9) / sum(lrs), rel=1e-12)
    heur = dtda.influence(ens, measure, method="ekfac", damping="heuristic")
    module = ens.recipe.build(0)
    curv = fit(module, [ens.members[0].params], {}, ens.data, find_layers(module), "true", "cross_entropy",
               [stream_seed(0, "fisher")], "ekfac", 256)[0]
    want = {name: 0.1 * float(lam.mean()) for name, lam in curv.eigenvalues().items()}
    assert heur.meta["damping"]["layers"][0] == pytest.approx(want, rel=1e-12)
    diag = dtda.influence(ens, measure, method="diagonal", damping="heuristic")
    assert diag.meta["damping"]["value"][0] > 0 and diag.meta["damping"]["layers"] is None


def test_seeds_together_equal_one_at_a_time(setup):
    ens, measure = setup
    both = dtda.influence(ens, measure, method="ekfac")
    for i, member in enumerate(ens.members):
        alone = dtda.influence(Ensemble(ens.recipe, ens.data, [member]), measure, method="ekfac")
        torch.testing.assert_close(both.delta[i], alone.delta[0], rtol=1e-12, atol=1e-15)


def test_query_rank_compresses_each_layer_by_truncated_svd(setup):
    ens, measure = setup
    full = dtda.influence(ens, measure, damping=0.1)
    same = dtda.influence(ens, measure, damping=0.1, query_rank=5)  # rank ≥ min(O, I+1): exact
    torch.testing.assert_close(same.delta, full.delta, rtol=1e-10, atol=1e-14)
    low = dtda.influence(ens, measure, method="identity", query_rank=1)
    grads, jac, module, _ = _oracle_terms(ens, measure, 0)
    u = {}
    for layer in find_layers(module):
        U, S, Vh = torch.linalg.svd(layer.matrix(jac))
        u.update(layer.split(S[:, None, :1] * U[:, :, :1] @ Vh[:, :1, :]))
    torch.testing.assert_close(low.delta[0], _dot(u, grads), rtol=1e-10, atol=1e-14)


def test_works_with_every_consumer(setup, tmp_path):
    ens, measure = setup
    got = dtda.influence(ens, measure, method="ekfac")
    back = dtda.SeedSamples.load(got.save(tmp_path / "samples.safetensors"))
    assert torch.equal(back.delta, got.delta) and back.meta == got.meta
    assert got.meta["modules"] == ["0", "2"] and got.meta["N"] == N and got.meta["fisher"] == "true"
    stats = got.distributional(bootstrap=0)
    assert stats is not None and got.top(3).indices.shape[0] == 3
    assert dtda.attribute.influence is dtda.influence


def test_conv_model_identity_equals_oracle():
    torch.manual_seed(0)
    X, y = torch.randn(6, 1, 4, 4, dtype=torch.float64), torch.randint(0, 2, (6,))

    def conv():
        return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(32, 2))
    ens = T.train_ensemble(_recipe(model=conv), (X, y), seeds=[3])
    measure = M.margin(X[:2], y[:2])
    got = dtda.influence(ens, measure, method="identity")
    module = ens.recipe.build(3)
    grads = per_example_gradients(module, ens.members[0].params, X, y, ens.recipe.loss_fn)
    jac = torch.func.jacrev(lambda p: measure.functional(p, {}, module))(ens.members[0].params)
    torch.testing.assert_close(got.delta[0], sum(torch.einsum("n...,q...->nq", grads[k], jac[k]) for k in jac) / 6,
                               rtol=1e-10, atol=1e-14)
    assert torch.isfinite(dtda.influence(ens, measure, method="ekfac").delta).all()


def _custom_loss(out, y):
    return F.cross_entropy(out, y, reduction="none")


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="lissa2"), "method must be one of"),
    (dict(method="ekfac", iterations=3), "unknown"),
    (dict(damping=-1.0), "damping must be a finite number"),
    (dict(damping=float("nan")), "damping must be a finite number"),
    (dict(damping=True), "damping must be a finite number"),
    (dict(damping="auto"), "damping must be a number"),
    (dict(fisher="exact"), "fisher must be one of"),
    (dict(query_rank=0), "query_rank"),
    (dict(batch_size=0), "batch_size"),
    (dict(modules=["9"]), "no module named"),
])
def test_bad_arguments_raise_one_clear_error(setup, kwargs, match):
    ens, measure = setup
    with pytest.raises(ValueError, match=match):
        dtda.influence(ens, measure, **kwargs)


def test_bad_setups_raise_before_work():
    X, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 3, (8,))
    measure = M.loss(X[:2], y[:2])
    custom = T.train_ensemble(_recipe(loss=_custom_loss), (X, y), seeds=[0])
    with pytest.raises(ValueError, match="fisher='empirical'"):
        dtda.influence(custom, measure)
    assert dtda.influence(custom, measure, fisher="empirical", damping=0.1).delta.shape == (1, 8, 2)
    adamw = T.train_ensemble(_recipe(optimizer=T.AdamW(0.01)), (X, y), seeds=[0])
    with pytest.raises(ValueError, match="AdamW.*heuristic"):
        dtda.influence(adamw, measure)
    assert dtda.influence(adamw, measure, damping="heuristic").meta["weight_decay"] == 0.0

    def normed():
        return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 3))
    ln = T.train_ensemble(_recipe(model=normed), (X, y), seeds=[0])
    with pytest.raises(ValueError, match=r"LayerNorm"):
        dtda.influence(ln, measure)
    part = dtda.influence(ln, measure, modules=["0", "2"], damping=0.1)
    assert part.meta["uncovered"] == ["1.weight", "1.bias"]
