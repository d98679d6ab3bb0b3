"""The GLM limit (PAPER §4.2): converged full-batch GD on L2-regularised logistic regression, so
reverse-mode UD equals the influence function δ^IF(k) = +(1/N)∇m(θ)ᵀH⁻¹∇ℓ_k exactly."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dtda.measure as M
import dtda.train as T
from dtda.attribute import unroll_member

datasets = pytest.importorskip("sklearn.datasets")

LAMBDA = 1e-2
N = 500


def bce(outputs, targets):
    """Logistic loss log(1 + e^z) − y z (softplus form: cheaper to differentiate twice)."""
    z = outputs.squeeze(-1)
    return F.softplus(z) - targets * z


def test_converged_reverse_mode_equals_influence_function():
    Xa, ya = datasets.load_breast_cancer(return_X_y=True)
    Xa = torch.tensor(Xa)
    Xa = (Xa - Xa.mean(0)) / Xa.std(0)
    ya = torch.tensor(ya, dtype=torch.float64)
    X, y, Xq, yq = Xa[:N], ya[:N], Xa[N:N + 3], ya[N:N + 3]
    # λ(H) ∈ [0.0100, 0.22] at the optimum but 3.4 at θ = 0: warm up to η = 8 (< 2/0.22), then
    # (1 − ηλ_min)^T ≈ e^{-30} and ‖∇J(θ_T)‖ ≈ 1e-17.
    recipe = T.Recipe(lambda: nn.Linear(30, 1), bce, T.SGD(8.0, weight_decay=LAMBDA), batch_size=N,
                      steps=450, schedule=("warmup", 100, "constant"), dtype=torch.float64)
    member = T.train_member(recipe, (X, y), seed=0)
    theta = member.params
    model = recipe.build(0)

    def per_example(p, x, t):
        return bce(torch.func.functional_call(model, p, (x[None],)), t[None])[0]

    def objective(p):
        reg = 0.5 * LAMBDA * sum(v.square().sum() for v in p.values())
        return bce(torch.func.functional_call(model, p, (X,)), y).mean() + reg

    grad_J = torch.cat([g.reshape(-1) for g in torch.func.grad(objective)(theta).values()])
    assert grad_J.norm() < 1e-12
    H = torch.func.hessian(lambda v: objective({"weight": v[:30].reshape(1, 30), "bias": v[30:]}))(
        torch.cat([theta["weight"].reshape(-1), theta["bias"]]))
    G = torch.func.vmap(torch.func.grad(per_example), in_dims=(None, 0, 0))(theta, X, y)
    grads = torch.cat([G["weight"].reshape(N, -1), G["bias"].reshape(N, -1)], 1)  # [N, 31]
    solved = torch.linalg.solve(H, grads.T)  # H⁻¹∇ℓ_k, [31, N]
    # one sweep for both kinds of measurement: three test losses and three raw predictions
    measure = M.custom(lambda model: torch.cat([bce(model(Xq), yq), model(Xq).reshape(-1)]),
                       names=[f"loss[{i}]" for i in range(3)] + [f"output[{i}]" for i in range(3)])
    jac = torch.func.jacrev(lambda p: measure.functional(p, {}, model))(theta)
    grad_m = torch.cat([jac["weight"].reshape(6, -1), jac["bias"].reshape(6, -1)], 1)  # [Q, 31]
    influence = (grad_m @ solved).T / N  # δ^IF [N, Q]
    _, delta = unroll_member(recipe, (X, y), member, measure)
    for part in (slice(0, 3), slice(3, 6)):
        err = (delta[:, part] - influence[:, part]).abs().max() / influence[:, part].abs().max()
        assert err <= 1e-8, f"{measure.names[part][0]}: max |δ_UD − δ_IF| / max |δ_IF| = {err:.2e}"
