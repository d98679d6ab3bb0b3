"""K-FAC / EK-FAC against the explicit Kronecker formulas on dense matrices, K-FAC = EK-FAC where
the correction is exact, K seeds fitted together = one at a time, and the pseudo-gradients'
statistics and determinism (float64)."""

import pytest
import torch
import torch.nn.functional as F
from curvature_oracle import dense_kronecker_solve, layer_inputs, per_example_gradients
from torch import nn

import dtda.curvature.fisher as fisher_mod
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


def _three_sets(module):
    params = {k: p.detach() for k, p in module.named_parameters()}
    return [params] + [{k: p + 0.3 * torch.randn_like(p) for k, p in params.items()} for _ in range(2)]


def _assert_each_equals_alone(module, sets, data, layers, fisher, together):
    V = {k: torch.randn((2,) + p.shape, dtype=torch.float64) for k, p in sets[0].items()}
    for i, p in enumerate(sets):
        alone = _fit(module, [p], data, layers, "ekfac", fisher, seeds=[11 + i])[0]
        for k, v in alone.solve(V, LAM).items():
            torch.testing.assert_close(together[i].solve(V, LAM)[k], v, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fisher", ["true", "empirical"])
@pytest.mark.parametrize("per_pass, grouped_sizes", [(None, {3}), (2, {2}), (1, set())])
def test_seeds_fitted_together_equal_one_at_a_time(fisher, per_pass, grouped_sizes, monkeypatch):
    """K = 3 sets captured as one vmapped computation per batch (per_pass None), as 2 + 1 or one
    per pass (a memory budget that allows fewer) give each set's curvature alone, sampled targets
    included: the solves agree to 1e-12 (float64)."""
    module, _, data, layers = _setup()
    sets = _three_sets(module)
    if per_pass is not None:
        monkeypatch.setattr(fisher_mod, "sets_per_pass", lambda *args, **kw: per_pass)
    sizes = []
    real = fisher_mod.capture_group
    monkeypatch.setattr(fisher_mod, "capture_group", lambda *args: sizes.append(len(args[1])) or real(*args))
    together = _fit(module, sets, data, layers, "ekfac", fisher, seeds=[11, 12, 13])
    assert set(sizes) == grouped_sizes and len(sizes) == 2 * 3 * len(grouped_sizes)  # 2 passes × 3 batches
    _assert_each_equals_alone(module, sets, data, layers, fisher, together)


def test_sets_per_pass_counts_factors_and_outputs_per_set():
    module, params, data, layers = _setup()
    # batch of 13: layer 0 a [13,1,3+1], g [13,1,4], out [13,4]; layer 1 a [13,1,4+1], g, out [13,3]
    per_set = 8 * (13 * (4 + 4 + 4) + 13 * (5 + 3 + 3))
    assert fisher_mod.sets_per_pass(module, params, {}, layers, data.X[:13], budget=2 * per_set) == 2
    assert fisher_mod.sets_per_pass(module, params, {}, layers, data.X[:13], budget=2 * per_set - 1) == 1
    assert fisher_mod.sets_per_pass(module, params, {}, layers, data.X[:13], budget=1) == 1


class _ItemScaled(nn.Module):
    """A model vmap refuses: its forward reads a Python number out of a tensor (``.item()``)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h / (1.0 + h.abs().max().item()))


def test_a_model_vmap_refuses_is_fitted_set_by_set_with_a_warning():
    torch.manual_seed(0)
    module = _ItemScaled().to(torch.float64)
    data = Data(torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 3, (30,)))
    layers, sets = find_layers(module), _three_sets(module)
    with pytest.warns(fisher_mod.GroupFallback, match=r"3 parameter sets are captured one at a time: vmap refuses"):
        together = _fit(module, sets, data, layers, "ekfac", "true", seeds=[11, 12, 13])
    _assert_each_equals_alone(module, sets, data, layers, "true", together)


def test_a_group_failing_after_drawing_targets_rewinds_the_generators(monkeypatch):
    """The fallback redraws the batch's targets from where the sets alone draw them."""
    module, _, data, layers = _setup()
    sets = _three_sets(module)
    real = fisher_mod.capture_group

    def fails_late(*args):
        real(*args)  # the sampled targets are drawn, then the group fails
        raise RuntimeError("refused late")
    monkeypatch.setattr(fisher_mod, "capture_group", fails_late)
    with pytest.warns(fisher_mod.GroupFallback, match="refused late"):
        together = _fit(module, sets, data, layers, "ekfac", "true", seeds=[11, 12, 13])
    _assert_each_equals_alone(module, sets, data, layers, "true", together)


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
