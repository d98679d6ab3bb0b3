"""Brute-force oracles for influence tests: per-example gradients by autograd in a loop, and the
dense K-FAC / EK-FAC matrices of a Linear layer (T = 1, with bias), in float64."""

import torch
from torch.func import functional_call


def per_example_gradients(module, params, X, y, loss_fn):
    """∇ℓ_n(θ) for each example, one autograd call each, module in eval mode: name -> [N, *shape]."""
    module.eval()
    rows = []
    for n in range(X.shape[0]):
        leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
        loss = loss_fn(functional_call(module, leaves, (X[n:n + 1],)), y[n:n + 1]).sum()
        rows.append(dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())))))
    return {k: torch.stack([r[k] for r in rows]) for k in params}


def layer_inputs(module, params, linear, X):
    """ā_n = [a_n; 1] of the nn.Linear ``linear`` at ``params``: [N, I+1]."""
    seen = []
    handle = linear.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    try:
        with torch.no_grad():
            functional_call(module.eval(), params, (X,))
    finally:
        handle.remove()
    a = seen[0]
    return torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], 1)


def dense_kronecker_solve(G, abar, V, kind, shift):
    """(F̂ + shift·I)⁻¹ V for the layer's dense K-FAC or EK-FAC matrix F̂ (row-major vec).

    G: [N, O, I+1] per-example gradients (bias last); abar: [N, I+1]; V: [Q, O, I+1].
    """
    N = G.shape[0]
    g = G[:, :, -1]                                   # T = 1: g_n = ∂ℓ_n/∂s_n is the bias column
    dA, QA = torch.linalg.eigh(abar.T @ abar / N)
    dS, QS = torch.linalg.eigh(g.T @ g / N)
    Q = torch.kron(QS, QA)                            # vec_r(Q_S X Q_Aᵀ) = (Q_S ⊗ Q_A) vec_r(X)
    if kind == "kfac":
        lam = torch.kron(dS, dA)
    else:
        flat = G.reshape(N, -1)
        lam = torch.diagonal(Q.T @ (flat.T @ flat / N) @ Q)  # diag of (1/N)Σ vec G vec Gᵀ in that basis
    P = Q @ torch.diag(lam + shift) @ Q.T
    return torch.linalg.solve(P, V.reshape(V.shape[0], -1).T).T.reshape(V.shape)
