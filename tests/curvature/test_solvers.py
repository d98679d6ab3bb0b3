"""Curvature-vector products against explicit autograd matrices, and the iHVP solvers against
the exact solve (float64, tiny models)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dtda.curvature import solvers
from dtda.curvature.products import Products

N, D_IN, H, C = 24, 3, 4, 3
WD = 0.05


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, H), nn.Tanh(), nn.Dropout(0.5), nn.Linear(H, C)).double()


def _data(loss):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(N, D_IN, generator=gen, dtype=torch.float64)
    if loss == "mse":
        return X, torch.randn(N, C, generator=gen, dtype=torch.float64)
    return X, torch.randint(C, (N,), generator=gen)


def _loss_fn(loss):
    if loss == "cross_entropy":
        return lambda z, y: F.cross_entropy(z, y, reduction="none")
    if loss == "mse":
        return lambda z, y: (z - y).square().mean(1)
    return lambda z, y: F.softplus(z).sum(1) - z.gather(1, y[:, None])[:, 0]  # a custom loss


def _products(loss, kind, names=None, batch_size=7):
    model = _mlp()
    X, y = _data(loss)
    params = {k: p.detach() for k, p in model.named_parameters()}
    names = names or list(params)
    return Products(model, params, {}, names, X, y, _loss_fn(loss), loss if loss != "custom" else None,
                    weight_decay=WD, kind=kind, batch_size=batch_size), model, X, y


def _explicit(loss, kind, names, indices=None):
    """The explicit matrix of J restricted to ``names`` by autograd (eval mode)."""
    prods, model, X, y = _products(loss, kind, names)
    model.eval()
    if indices is not None:
        X, y = X[indices], y[indices]
    params = prods.params
    loss_fn = _loss_fn(loss)
    flat0 = prods.flatten({k: params[k][None] for k in names})[0]

    def covered(flat):
        return {k: v[0] for k, v in prods.unflatten(flat[None]).items()}

    def outputs(flat):
        return functional_call(model, {**params, **covered(flat)}, (X,))

    if kind == "hessian":
        M = torch.func.hessian(lambda f: loss_fn(outputs(f), y).mean())(flat0)
    else:
        J = torch.func.jacrev(outputs)(flat0)                      # [N, C, d]
        z = outputs(flat0).detach()
        Hz = torch.func.vmap(torch.func.hessian(lambda zz, yy: loss_fn(zz[None], yy[None])[0]))(z, y)
        M = torch.einsum("nci,ncd,ndj->ij", J, Hz, J) / X.shape[0]
    return M + WD * torch.eye(M.shape[0], dtype=M.dtype), prods


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "custom"])
@pytest.mark.parametrize("kind", ["ggn", "hessian"])
def test_products_equal_explicit_matrices(loss, kind):
    names = ["0.weight", "3.weight", "3.bias"]   # "0.bias" held fixed
    M, prods = _explicit(loss, kind, names)
    assert torch.allclose(prods.matrix(chunk=5), M, rtol=1e-10, atol=1e-12)
    idx = torch.tensor([3, 3, 10, 0, 21])        # a multiset: 3 counts twice
    Mb, _ = _explicit(loss, kind, names, idx)
    V = torch.randn(4, prods.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(prods.minibatch_flat(idx, V), V @ Mb, rtol=1e-10, atol=1e-12)
    assert torch.allclose(prods.full_flat(V), V @ M, rtol=1e-10, atol=1e-12)


def _system(seed=3, q=3):
    prods, *_ = _products("cross_entropy", "ggn", batch_size=256)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(q, prods.dim, dtype=torch.float64, generator=gen)
    return prods, prods.matrix(), v


def test_exact_solves_and_pseudo_inverts():
    _, M, v = _system()
    lam = 0.1
    sol = solvers.exact(M, v, lam)
    assert torch.allclose(sol.x, torch.linalg.solve(M + lam * torch.eye(M.shape[0], dtype=M.dtype), v.T).T,
                          rtol=1e-10, atol=1e-12)
    assert max(sol.residuals) < 1e-12
    singular = M - WD * torch.eye(M.shape[0], dtype=M.dtype)   # the data term alone is rank-deficient
    pinv = solvers.exact(singular, v, 0.0).x
    assert torch.allclose(pinv, v @ torch.linalg.pinv(singular, hermitian=True, rtol=1e-10), rtol=1e-8, atol=1e-10)


def test_cg_converges_to_exact_with_and_without_preconditioner():
    prods, M, v = _system()
    lam = 0.01
    ref = solvers.exact(M, v, lam).x
    plain = solvers.cg(prods.full_flat, v, lam, max_iter=200, tol=1e-12)
    assert torch.allclose(plain.x, ref, rtol=1e-9, atol=1e-9 * ref.abs().max())
    assert max(plain.residuals) < 1e-10
    diag = torch.diagonal(M) + lam   # a Jacobi preconditioner stands in for EK-FAC here
    pre = solvers.cg(prods.full_flat, v, lam, max_iter=200, tol=1e-12, precondition=lambda r: r / diag)
    assert torch.allclose(pre.x, ref, rtol=1e-9, atol=1e-9 * ref.abs().max())


def test_cg_refuses_an_indefinite_operator():
    prods, _, v = _system()
    with pytest.raises(solvers.DivergenceError, match=r"cg diverged at iteration \d+: .*not positive definite"):
        solvers.cg(lambda x: -prods.full_flat(x), v, 0.0)


def test_lissa_converges_to_exact_and_handles_its_scale():
    prods, M, v = _system(q=2)
    lam = 0.1
    ref = solvers.exact(M, v, lam).x
    top = float(torch.linalg.eigvalsh(M).max())
    assert abs(solvers.power_iteration(prods.full_flat, prods.dim, torch.float64) - top) < 1e-3 * top
    alpha = 1.0 / (top + lam)
    sol = solvers.lissa(prods.minibatch_flat, prods.n, v, lam, alpha=alpha, iterations=30, repeats=2,
                        seed=0, full_matvec=prods.full_flat)
    # minibatch products (N drawn with replacement) leave a noise floor: within 5% of the exact
    # solution (measured 1.5%), with full-data residuals below 0.1 (measured 0.03)
    assert (sol.x - ref).norm() <= 0.05 * ref.norm()
    assert sol.iterations == 60 and max(sol.residuals) < 0.1
    again = solvers.lissa(prods.minibatch_flat, prods.n, v, lam, alpha=alpha, iterations=30, repeats=2,
                          seed=0, full_matvec=prods.full_flat)
    assert torch.equal(again.x, sol.x)   # seeded sampling: bit-identical reruns


def test_lissa_with_too_large_alpha_raises_naming_solver_iteration_residual():
    prods, M, v = _system(q=1)
    lam_max = float(torch.linalg.eigvalsh(M).max())
    with pytest.raises(solvers.DivergenceError, match=r"lissa diverged at iteration \d+: relative residual .* = "):
        solvers.lissa(prods.minibatch_flat, prods.n, v, 0.1, alpha=20.0 / lam_max, iterations=200, batch_size=N)


def test_astra_converges_to_exact():
    prods, M, v = _system(q=2)
    lam = 0.1
    ref = solvers.exact(M, v, lam).x
    # a deliberately rough preconditioner (the diagonal) that ASTRA's iterations correct
    diag = torch.diagonal(M) + lam
    sol = solvers.astra(prods.minibatch_flat, prods.n, v, lam, lambda r: r / diag, iterations=100, lr=0.5,
                        decay_every=25, seed=0, full_matvec=prods.full_flat)
    start = solvers.residuals(prods.full_flat, v / diag, v, lam)
    # minibatch products: within 6% of the exact solution (measured 3.4%), and the residual a
    # quarter of x_0's or less (measured 0.10 from 0.55)
    assert (sol.x - ref).norm() <= 0.06 * ref.norm()
    assert max(sol.residuals) < 0.25 * max(start)


def test_astra_with_too_large_step_raises_naming_solver_iteration_residual():
    prods, _, v = _system(q=1)
    with pytest.raises(solvers.DivergenceError, match=r"astra diverged at iteration \d+: relative residual .* = "):
        solvers.astra(prods.minibatch_flat, prods.n, v, 0.1, lambda r: r, lr=100.0, iterations=50)


def test_astra_default_step_needs_damping():
    prods, _, v = _system(q=1)
    with pytest.raises(ValueError, match="astra: the default step size lr = 0.1·λ needs damping"):
        solvers.astra(prods.minibatch_flat, prods.n, v, 0.0, lambda r: r)
