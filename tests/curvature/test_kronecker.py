"""K-FAC / EK-FAC against the explicit Kronecker formulas on dense matrices, K-FAC = EK-FAC where
the correction is exact, K seeds fitted together = one at a time, and the pseudo-gradients'
statistics and determinism (float64)."""

import pytest
import torch
import torch.nn.functional as F
from curvature_oracle import dense_kronecker_solve, layer_inputs, per_example_gradients
from torch import nn

from dtda.curvature import find_layers, fit
from dtda.curvature.fisher import pseudo_factors
from dtda.train.data import Data

WD, LAM = 0.05, 0.1


def _ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


def _setup(n=30, seed=0):
    torch.manual_seed(seed)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).to(torch.float64)
    params = {k: p.detach() for k, p in module.named_parameters()}
    data = Data(torch.randn(n, 3, dtype=torch.float64), torch.randint(0, 3, (n,)))
    return module, params, data, find_layers(module)


def _fit(module, params_list, data, layers, kind, fisher="empirical", seeds=None, batch_size=13):
    seeds = seeds if seeds is not None else list(range(len(params_list)))
    return fit(module, params_list, {}, data, layers, fisher, "cross_entropy", seeds, kind, batch_size,
               loss_fn=_ce, weight_decay=WD)


@pytest.mark.parametrize("kind", ["kfac", "ekfac"])
def test_solve_equals_explicit_kronecker_formula(kind):
    module, params, data, layers = _setup()
    curv = _fit(module, [params], data, layers, kind)[0]
    V = {k: torch.randn((2,) + p.shape, dtype=torch.float64) for k, p in params.items()}
    got = curv.solve(V, LAM)
    grads = per_example_gradients(module, params, data.X, data.y, _ce)
    for layer in layers:
        G = layer.matrix(grads)
        a = layer_inputs(module, params, layer.module, data.X)
        want = dense_kronecker_solve(G, a, layer.matrix(V), kind, WD + LAM)
        torch.testing.assert_close(layer.matrix(got), want, rtol=1e-9, atol=1e-12)


def test_kfac_equals_ekfac_for_one_example():
    module, params, data, layers = _setup(n=1)
    V = {k: torch.randn((3,) + p.shape, dtype=torch.float64) for k, p in params.items()}
    kfac = _fit(module, [params], data, layers, "kfac")[0]
    ekfac = _fit(module, [params], data, layers, "ekfac")[0]
    for k, lam in kfac.eigenvalues().items():            # Λ = d_S d_Aᵀ when F = āāᵀ ⊗ ggᵀ
        torch.testing.assert_close(ekfac.eigenvalues()[k], lam, rtol=1e-10, atol=1e-14)
    for k, v in kfac.solve(V, LAM).items():
        torch.testing.assert_close(ekfac.solve(V, LAM)[k], v, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("fisher", ["true", "empirical"])
def test_seeds_fitted_together_equal_one_at_a_time(fisher):
    module, params, data, layers = _setup()
    sets = [params, {k: p + 0.3 * torch.randn_like(p) for k, p in params.items()}]
    together = _fit(module, sets, data, layers, "ekfac", fisher, seeds=[11, 12])
    V = {k: torch.randn((2,) + p.shape, dtype=torch.float64) for k, p in params.items()}
    for i, p in enumerate(sets):
        alone = _fit(module, [p], data, layers, "ekfac", fisher, seeds=[11 + i])[0]
        for k, v in alone.solve(V, LAM).items():
            torch.testing.assert_close(together[i].solve(V, LAM)[k], v, rtol=1e-12, atol=1e-14)


def test_heuristic_per_layer_dict_and_apply_sees_weight_decay():
    module, params, data, layers = _setup()
    curv = _fit(module, [params], data, layers, "ekfac")[0]
    V = {k: torch.randn((1,) + p.shape, dtype=torch.float64) for k, p in params.items()}
    same = curv.solve(V, {layer.name: LAM for layer in layers})
    for k, v in curv.solve(V, LAM).items():
        torch.testing.assert_close(same[k], v)
    shifted = curv.apply(V, lambda lam: lam)            # multiplies by Λ + λ_wd
    back = curv.solve(shifted, 0.0)
    for k, v in V.items():
        torch.testing.assert_close(back[k], v, rtol=1e-8, atol=1e-10)


def _pseudo_S(module, params, data, layers, loss_name, seed=3):
    total = None
    for cap in pseudo_factors(module, params, {}, layers, data.X, data.y, "true", None, loss_name, seed, 500):
        g = cap.g[-1][:, 0]
        total = g.T @ g if total is None else total + g.T @ g
    return total / len(data)


def test_true_fisher_pseudo_gradients_match_output_hessian_and_rerun_identically():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(2, 3)).to(torch.float64)
    params = {k: p.detach() for k, p in module.named_parameters()}
    layers = find_layers(module)
    x = torch.randn(1, 2, dtype=torch.float64).expand(4000, 2)
    ce = Data(x, torch.zeros(4000, dtype=torch.long))
    S = _pseudo_S(module, params, ce, layers, "cross_entropy")
    p = torch.softmax(module(x[:1]), 1)[0].detach()
    torch.testing.assert_close(S, torch.diag(p) - torch.outer(p, p), atol=0.02, rtol=0)  # E g̃g̃ᵀ = ∇²_z ℓ
    assert torch.equal(S, _pseudo_S(module, params, ce, layers, "cross_entropy"))
    assert not torch.equal(S, _pseudo_S(module, params, ce, layers, "cross_entropy", seed=4))
    mse = Data(x, torch.zeros(4000, 3, dtype=torch.float64))
    S = _pseudo_S(module, params, mse, layers, "mse")
    torch.testing.assert_close(S, torch.eye(3, dtype=torch.float64) * 2 / 3, atol=0.05, rtol=0)


def test_bad_fit_arguments():
    module, params, data, layers = _setup()
    with pytest.raises(ValueError, match="fisher='empirical'"):
        fit(module, [params], {}, data, layers, "true", None, [0], "ekfac", 8, loss_fn=_ce)
    with pytest.raises(ValueError, match="kind must be one of"):
        _fit(module, [params], data, layers, "shampoo")
    with pytest.raises(ValueError, match="one generator seed per parameter set"):
        _fit(module, [params], data, layers, "ekfac", seeds=[1, 2])
