"""The product-based influence methods: ``exact`` equals converged unrolling on a GLM (PAPER §4.2),
CG / LiSSA / ASTRA converge to ``exact``, divergence and size errors, and ``diagnose`` (float64)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dtda
import dtda.measure as M
import dtda.train as T
from dtda.attribute import unroll_member
from dtda.curvature.solvers import DivergenceError
from dtda.train.ensemble import Ensemble

datasets = pytest.importorskip("sklearn.datasets")


def bce(outputs, targets):
    """Logistic loss log(1 + e^z) − y z (a custom loss: its H_out comes from autograd)."""
    z = outputs.squeeze(-1)
    return F.softplus(z) - targets * z


def test_exact_equals_converged_unrolling_on_glm():
    """L2-regularised logistic regression on breast_cancer, converged full-batch GD: reverse-mode
    UD equals +(1/N)∇mᵀH⁻¹∇ℓ_k (GGN = Hessian for a GLM), for test losses and raw outputs.
    Five weakly correlated features and λ_wd = 0.2 make GD with η = 2.4 contract fast enough that 50
    steps converge (‖∇J‖ ≈ 2e-14, (1 − ηλ_min)^T ≈ 1e-22), so the test stays cheap."""
    Xa, ya = datasets.load_breast_cancer(return_X_y=True)
    Xa = torch.tensor(Xa)[:, [1, 4, 9, 11, 14]]
    Xa = (Xa - Xa.mean(0)) / Xa.std(0)
    ya = torch.tensor(ya, dtype=torch.float64)
    n, lam = 100, 0.2
    X, y, Xq, yq = Xa[:n], ya[:n], Xa[500:503], ya[500:503]
    recipe = T.Recipe(lambda: nn.Linear(5, 1), bce, T.SGD(2.4, weight_decay=lam), batch_size=n, steps=50,
                      dtype=torch.float64)
    member = T.train_member(recipe, (X, y), seed=0)
    model = recipe.build(0)

    def objective(p):
        return bce(torch.func.functional_call(model, p, (X,)), y).mean() + \
            0.5 * lam * sum(v.square().sum() for v in p.values())

    assert sum(g.square().sum() for g in torch.func.grad(objective)(member.params).values()).sqrt() < 1e-12
    measure = M.custom(lambda model: torch.cat([bce(model(Xq), yq), model(Xq).reshape(-1)]),
                       names=[f"loss[{i}]" for i in range(3)] + [f"output[{i}]" for i in range(3)])
    _, unrolled = unroll_member(recipe, (X, y), member, measure)
    ens = Ensemble(recipe, T.as_data((X, y), torch.float64), [member])
    for curvature in ("ggn", "hessian"):
        got = dtda.influence(ens, measure, method="exact", damping=0.0, fisher="empirical", curvature=curvature)
        assert got.method == "influence-exact" and got.meta["seeds"][0]["residual"] < 1e-12
        for part in (slice(0, 3), slice(3, 6)):
            want = got.delta[0][:, part]
            err = (unrolled[:, part] - want).abs().max() / want.abs().max()
            assert err <= 1e-8, \
                f"{curvature}, {measure.names[part][0]}: max |δ_UD − δ_IF| / max |δ_IF| = {err:.2e}"


N, WD = 12, 1e-2


@pytest.fixture(scope="module")
def mlp():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(N + 2, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (N + 2,), generator=gen)
    recipe = T.Recipe(lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)), "cross_entropy",
                      T.SGD(0.2, momentum=0.9, weight_decay=WD), batch_size=4, epochs=3, dtype=torch.float64)
    return T.train_ensemble(recipe, (X[:N], y[:N]), seeds=[0, 1]), M.loss(X[N:], y[N:]), (X[:N], y[:N])


def _relative(a, b):
    return float((a - b).norm() / b.norm())


def test_iterative_solvers_converge_to_exact(mlp):
    ens, measure, _ = mlp
    ens = Ensemble(ens.recipe, ens.data, ens.members[:1])
    lam = 1.0
    exact = dtda.influence(ens, measure, method="exact", damping=lam)
    scale = float(exact.delta.abs().max())
    for precondition in (None, "ekfac"):
        cg = dtda.influence(ens, measure, method="cg", damping=lam, tol=1e-12, precondition=precondition)
        torch.testing.assert_close(cg.delta, exact.delta, rtol=1e-8, atol=1e-10 * scale)
        assert cg.meta["seeds"][0]["residual"] < 1e-10
    # minibatch products (6 of 12 examples, with replacement) leave a noise floor: stated
    # tolerance 10% of ‖δ‖ (measured: LiSSA 4.4%, ASTRA 3.8%; the EK-FAC start x_0 is at 24%)
    lissa = dtda.influence(ens, measure, method="lissa", damping=lam, alpha=0.1, iterations=30, batch_size=6)
    astra = dtda.influence(ens, measure, method="astra", damping=lam, iterations=30, lr=0.2, momentum=0.5,
                           decay_every=10, batch_size=6)
    assert _relative(lissa.delta, exact.delta) < 0.1 and _relative(astra.delta, exact.delta) < 0.1
    assert lissa.meta["seeds"][0]["iterations"] == 30 and astra.meta["seeds"][0]["iterations"] == 30


def test_self_influence_is_positive(mlp):
    ens, _, (X, y) = mlp
    got = dtda.influence(ens, M.loss(X, y), method="exact", damping=0.05)
    assert bool((torch.diagonal(got.delta, dim1=1, dim2=2) > 0).all())   # removing k raises ℓ_k


def test_diverging_lissa_names_solver_iteration_and_residual(mlp):
    ens, measure, _ = mlp
    with pytest.raises(DivergenceError, match=r"lissa diverged at iteration \d+: relative residual .* = \d"):
        dtda.influence(ens, measure, method="lissa", damping=0.1, alpha=100.0, iterations=50)


def test_bad_options_and_oversized_exact_raise(mlp):
    ens, measure, (X, y) = mlp
    with pytest.raises(ValueError, match="curvature must be one of"):
        dtda.influence(ens, measure, method="exact", curvature="fisher")
    with pytest.raises(ValueError, match="precondition must be None or 'ekfac'"):
        dtda.influence(ens, measure, method="cg", precondition="jacobi")
    wide = T.Recipe(lambda: nn.Linear(3, 2000), "cross_entropy", T.SGD(0.1), batch_size=N, steps=1,
                    dtype=torch.float64)
    big = T.train_ensemble(wide, (X, y), seeds=[0])
    with pytest.raises(ValueError, match=r"'exact' builds a d × d matrix; .* d = 8000 > 5000. Use method='cg'"):
        dtda.influence(big, M.loss(X[:1], y[:1]), method="exact")


def test_diagnose_on_a_tiny_model(mlp, tmp_path):
    _, measure, (X, y) = mlp
    recipe = T.Recipe(lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)), "cross_entropy",
                      T.SGD(0.2), batch_size=4, epochs=2, dtype=torch.float64, checkpoint_every=3)
    ens = T.train_ensemble(recipe, (X, y), seeds=[0])
    got = dtda.attribute.diagnose(ens, measure, method="exact")
    table = got.table()
    assert table["step"] == [3, 3, 6, 6] and table["measurement"][:2] == measure.names_for(2)
    assert all(-1.0 <= c <= 1.0 for c in table["correlation"])
    # no weight decay: the GGN of 36 outputs is singular in 38 parameters, so part of ∇m lies in its null space
    assert all(0.0 < s < 1.0 for s in table["null_share"])
    got.plot(tmp_path / "diagnose.png")
    assert (tmp_path / "diagnose.png").stat().st_size > 0


def test_diagnose_refuses_a_schedule_that_depends_on_the_horizon(mlp):
    # truncating a cosine run at t would replay it with the horizon t: other learning rates
    _, measure, (X, y) = mlp
    make = lambda schedule: T.Recipe(lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)),  # noqa: E731
                                     "cross_entropy", T.SGD(0.2), batch_size=4, epochs=2, schedule=schedule,
                                     dtype=torch.float64, checkpoint_every=3)
    ens = T.train_ensemble(make("cosine"), (X, y), seeds=[0])
    with pytest.raises(ValueError, match=r"schedule 'cosine' depends on the number of steps .* truncated at step 3"):
        dtda.attribute.diagnose(ens, measure, method="exact")
    stepped = T.train_ensemble(make(("step", 4, 0.5)), (X, y), seeds=[0])
    assert dtda.attribute.diagnose(stepped, measure, method="exact").table()["step"] == [3, 3, 6, 6]
