"""Reverse-mode unrolled differentiation (PAPER §3.4): δ(k) for every example, Q adjoints at once.

State s_t = (θ_t, optimiser state), s_{t+1} = Φ_t(s_t, w_{B_t}). The adjoint λ_t = ∂m(θ_T)/∂s_t
starts at λ_T = (∇m(θ_T), 0) and obeys λ_t = (∂Φ_t/∂s_t)ᵀλ_{t+1}; the weights' cotangent gives
δ(n) −= [(∂Φ_t/∂w_{B_t})ᵀλ_{t+1}]_n (with multiplicity for repeated indices). Q measurements
carry Q adjoints, vmapped. States are recomputed from checkpoints one segment at a time, so
memory is O((T/C + C)·|s|·Q).

Four routes give the same numbers (to rounding):

- ``generic``: ``torch.func.vjp`` of the whole step Φ_t w.r.t. (θ, state, w_B)
  (reverse-over-reverse); any model and optimiser.
- ``ghost``: Φ_t = U(θ, state, d(θ, w)) with d = ∇_θL_t. The optimiser part U is elementwise:
  its vjp, in closed form per optimiser, gives (λ_θ direct, λ_state, λ_d). Then λ_θ += H_t λ_d (one eager forward, batched
  double backward for the Q directions) and the weights' cotangent (1/|B_t|)·λ_dᵀ∇ℓ_n comes from ``dtda.ops.ghost_dot`` on captured
  Linear-layer factors. Needs every parameter in an ``nn.Linear``.
- ``double-backward``: as ``ghost``, but w_B is a leaf of the eager graph, so the same batched
  double backward of σ_q = λ_{d,q}ᵀ∇_θL_t gives both H_t λ_d = ∇_θσ and the weights' cotangent
  ∇_wσ (PAPER §3.4 "batch scores"); any model.
- ``mlp``: as ``ghost``, but H_t λ_d and the scores come from hand-derived batched R-operator
  passes (:mod:`dtda.attribute.mlp`); needs a chain of Linear layers, elementwise activations
  and Dropout with the cross-entropy or mse loss.
- ``auto``: ``mlp`` where it applies, else ``ghost`` when every parameter is in an
  ``nn.Linear``, else ``double-backward``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import vjp, vmap

from dtda.attribute import ghost, mlp
from dtda.train.data import Data
from dtda.train.member import Member, replay
from dtda.train.optim import Params, State
from dtda.train.step import Step

ROUTES = ("auto", "generic", "mlp", "ghost", "double-backward")


def _generic(step: Step, params: Params, state: State, x, y, w, t, lam, chunk_size, layers, scratch):
    def phi(p, s, wb):
        p2, s2, _ = step.phi(p, s, x, y, wb, t)
        return p2, s2

    _, pull = vjp(phi, params, state, w)
    lp, ls, lw = vmap(pull, chunk_size=chunk_size)(lam)
    return (lp, ls), lw


def _eager(step: Step, params: Params, state: State, x, y, w, t, lam, chunk_size, layers, scratch):
    """The ``ghost`` route (``layers``: the Linear layers) or ``double-backward`` (None).
    Consumes ``lam`` (the optimiser's adjoint runs in place, in ``scratch``)."""
    factors = ghost.capture(step, layers or [], params, x, y, w, t, weights_leaf=layers is None)
    grads = {k: d.detach() for k, d in factors.grads.items()}
    lp, ls, ld = step.update_adjoint(params, state, grads, t, *lam, scratch)
    hu, lw = factors.hvp(ld, chunk_size)
    if layers is not None:
        lw = ghost.scores(layers, factors, ld).T / w.shape[0]
    return ({k: lp[k] + hu[k] for k in lp}, ls), lw


def _mlp(step: Step, params: Params, state: State, x, y, w, t, lam, chunk_size, nodes, scratch):
    """The ``mlp`` route: hand-derived batched R-operator passes (:mod:`dtda.attribute.mlp`).
    Consumes ``lam``: the optimiser's adjoint runs in place (in ``scratch``) and H_t λ_d is
    accumulated in place into the θ-adjoint."""
    fb = mlp.forward_backward(nodes, step, params, x, y, w, t)
    lp, ls, ld = step.update_adjoint(params, state, fb.grads, t, *lam, scratch)
    q = next(iter(ld.values())).shape[0]
    chunk = chunk_size or q
    scores = [mlp.hvp_and_scores(nodes, step, params, fb, {k: v[lo:lo + chunk] for k, v in ld.items()},
                                 {k: v[lo:lo + chunk] for k, v in lp.items()})
              for lo in range(0, q, chunk)]
    return (lp, ls), torch.cat(scores) / w.shape[0]


def choose_route(route: str, step: Step, params: Params, input_dim: int = 2):
    """(engine, its static argument) for ``route`` ∈ ROUTES; ``input_dim``: dimensions of a batch
    of inputs (the ``mlp`` route needs [B, features])."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if route == "generic":
        return _generic, None
    if route in ("mlp", "auto"):
        nodes = mlp.plan(step.module, list(params), step.recipe.loss_name) if input_dim == 2 else None
        if nodes is not None:
            return _mlp, nodes
        if route == "mlp":
            raise ValueError("route='mlp' needs an nn.Sequential of nn.Linear, supported activations "
                             f"({', '.join(t.__name__ for t in mlp.ACTIVATIONS)}) and nn.Dropout, loss "
                             f"'cross_entropy' or 'mse' and inputs [B, features]; use route='auto'")
    if route == "double-backward":
        return _eager, None
    layers = ghost.linear_layers(step.module, list(params))
    if route == "ghost" and layers is None:
        raise ValueError("route='ghost' needs every parameter in an nn.Linear layer (weight or bias); "
                         "use route='generic' or 'double-backward' (or 'auto') for other models")
    return _eager, layers


def measurement_gradient(step: Step, measure, params: Params) -> tuple[Tensor, Params]:
    """(m(θ) [Q], ∇m(θ) as name -> [Q, *shape])."""
    def f(p):
        return measure.functional(p, step.buffers, step.module)

    m = f(params).detach()
    return m, torch.func.jacrev(f)(params)


def reverse(step: Step, data: Data, member: Member, measure, route: str = "auto",
            chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """(m(θ_T) [Q], δ [N, Q]) for one member, δ(n) = −∂m(θ_T)/∂w_n."""
    rec = member.record
    n = len(data)
    weights = member.weights(n, step.recipe.dtype)
    m, grad_m = measurement_gradient(step, measure, member.params)
    grad_m = {k: g.contiguous() for k, g in grad_m.items()}  # updated in place by the sweep
    final_state = rec.checkpoints[rec.steps][1]
    q = m.shape[0]
    lam = (grad_m, {slot: {k: v.new_zeros((q,) + v.shape) for k, v in vals.items()}
                    for slot, vals in final_state.items()})
    engine, layers = choose_route(route, step, member.params, data.X.dim())
    delta = torch.zeros(n, q, dtype=m.dtype)
    scratch: dict = {}  # the optimiser adjoint's buffers, reused by every step
    marks = sorted(rec.checkpoints)
    for start, stop in reversed(list(zip(marks[:-1], marks[1:]))):
        states = replay(step, data, member, start, stop, weights)
        for t in range(stop - 1, start - 1, -1):
            params, state = states[t - start]
            idx = rec.batches[t]
            lam, lw = engine(step, params, state, data.X[idx], data.y[idx], weights[idx], t, lam,
                             chunk_size, layers, scratch)
            delta.index_add_(0, idx, lw.T, alpha=-1.0)
        del states
    return m, delta
