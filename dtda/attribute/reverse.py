"""Reverse-mode unrolled differentiation (PAPER §3.4): δ(k) for every example, Q adjoints at once.

State s_t = (θ_t, optimiser state), s_{t+1} = Φ_t(s_t, w_{B_t}). The adjoint λ_t = ∂m(θ_T)/∂s_t
starts at λ_T = (∇m(θ_T), 0) and obeys λ_t = (∂Φ_t/∂s_t)ᵀλ_{t+1}; the weights' cotangent gives
δ(n) −= [(∂Φ_t/∂w_{B_t})ᵀλ_{t+1}]_n (with multiplicity for repeated indices). Q measurements
carry Q adjoints, vmapped. States are recomputed from checkpoints one segment at a time, so
memory is O((T/C + C)·|s|·Q). K members (seeds) are swept together: their states are replayed
as they were trained (in lockstep for a training group, :mod:`dtda.train.lockstep`) and their
K × Q adjoints advance in the same sweep (step by step; on the ``mlp`` route member by member
through each checkpoint segment).

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
  and Dropout with the cross-entropy or mse loss. The forward/backward pass runs for the K
  members at once; the optimiser's adjoint (in the form of ``sweep_adjoint``: one pass over the
  adjoints for heavy ball) and the R-passes per member.
- ``auto``: ``mlp`` where it applies, else ``ghost`` when every parameter is in an
  ``nn.Linear``, else ``double-backward``.

The members of a group trained through ``vmap`` (:class:`dtda.train.lockstep.VmapGroupStep`)
take the ``double-backward`` route (with ``auto`` or ``double-backward``) batched over the
members: one vmapped eager forward and one batched double backward per step for all K × Q
directions.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import vjp, vmap

from dtda.attribute import ghost, mlp
from dtda.train import chain
from dtda.train.data import Data
from dtda.train.lockstep import Replayer, VmapGroupStep, stack, unstack, unstack_all
from dtda.train.optim import Params, State
from dtda.train.recipe import Recipe
from dtda.train.record import Member
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


def _mlp_pass(steps: list[Step], params: Params, x, y, w, t, nodes) -> chain.Pass:
    """Step t's forward/backward pass for the K members of the ``mlp`` route at once (stacked
    parameters [K, ...], inputs [K, B, ...]), where the replay did not take it."""
    recipe = steps[0].recipe
    gens = [torch.Generator().manual_seed(s.dropout_seed(t)) for s in steps] if steps[0].stochastic else None
    return chain.forward_backward(nodes, params, x, y, w, recipe.loss_name, chain.decay(recipe.optimizer), gens)


def _mlp(step: Step, params: Params, state: State, fb: chain.Pass, t: int, lam, chunk_size, nodes, scratch):
    """The ``mlp`` route for one member (its states name -> [*shape], ``fb`` its
    :func:`dtda.attribute.mlp.member_passes`; ``lam``: its adjoints [Q, ...]): the optimiser's
    adjoint, then the hand-derived R-operator passes (:mod:`dtda.attribute.mlp`) on the gradient
    cotangent, back to back so that the Q·|θ| adjoints are still in cache. Consumes ``lam``: the
    optimiser's adjoint runs in place (in ``scratch``) and H_t λ_d is accumulated in place into
    the θ-adjoint. Returns (the new adjoint, scores [Q, B] before division by the batch size)."""
    recipe = step.recipe
    lr_next = step.lr(t + 1) if t + 1 < step.T else None
    # the gradient cotangent is scale·u (one pass over the adjoints instead of two for heavy ball)
    lp, ls, u, scale = recipe.optimizer.sweep_adjoint(params, state, fb.grads, step.lr(t), lr_next, t, *lam, scratch)
    q = next(iter(u.values())).shape[0]
    chunk = min(chunk_size or q, q)
    scores = torch.cat([mlp.hvp_and_scores(nodes, recipe.loss_name, chain.decay(recipe.optimizer), params, fb,
                                           *({n: v[lo:lo + chunk] for n, v in d.items()} if chunk < q else d
                                             for d in (u, lp)), scale)
                        for lo in range(0, q, chunk)])
    return (lp, ls), scores.mul_(scale)


def _vmapped(steps: list[Step], params: Params, state: State, x, y, w, t, lam, chunk_size, group, scratch):
    """The ``double-backward`` route for the K members of a group trained by ``vmap``
    (:class:`dtda.train.lockstep.VmapGroupStep` ``group``; stacked states [K, ...], inputs
    [K, B, ...], ``lam`` and ``scratch`` one entry per member with adjoints [Q, ...]): one
    eager vmapped forward of the K members' objectives with θ [K, ...] and w_B [K, B] as leaves,
    d = ∇_θ Σ_k L_t,k (member k's gradient in slot k: the members do not interact), the
    optimiser's adjoint per member, then one batched double backward of σ_q = Σ_k λ_{d,k,q}ᵀd_k
    for the Q directions gives every member's H_t λ_d and weight cotangents at once."""
    with torch.enable_grad():
        leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
        weights = w.detach().requires_grad_()
        totals, _ = group.objective(leaves, x, y, weights, t)
        grads = dict(zip(leaves, torch.autograd.grad(totals.sum(), list(leaves.values()), create_graph=True)))
    out, lds = [], []
    for k in range(len(steps)):
        lp, ls, ld = steps[k].update_adjoint(unstack(params, k), unstack(state, k),
                                             {n: g[k].detach() for n, g in grads.items()}, t, *lam[k], scratch[k])
        out.append((lp, ls))
        lds.append(ld)
    hu, lw = ghost.Factors(leaves, weights, grads, [], []).hvp(
        {n: torch.stack([ld[n] for ld in lds], 1) for n in leaves}, chunk_size)  # directions [Q, K, ...]
    for k, (lp, _) in enumerate(out):
        for n, h in hu.items():
            lp[n].add_(h[:, k])
    return out, lw.transpose(0, 1)


def _mlp_segment(steps: list[Step], replayer: Replayer, data: Data, states, start: int, stop: int, lam,
                 chunk_size, nodes, scratch, delta: Tensor) -> None:
    """Steps stop − 1 down to ``start`` of the ``mlp`` route: the passes the replay did not take
    for all K members at once, then member by member through the segment, so that a member's
    adjoints (2·Q·|θ|) stay in cache from one step to the next rather than K members' cycling
    through memory every step (two concurrent one-thread workers, groups of 8: 1.02 and 1.04 times
    as fast as step by step, docs/unrolling.md). Updates ``lam`` and ``delta`` [K, N, Q] in place;
    each member's numbers are bit for bit those of a step-by-step sweep (the members do not
    interact, and δ of a member adds its steps' scores in the same order: one ``index_add_`` per
    member and segment, which adds its rows in order)."""
    K, order = len(steps), range(stop - 1, start - 1, -1)
    views, batches = {}, {}
    for t in order:  # every member's views of step t, taken together (in cache, one unbind each)
        params, state, fb = states[t - start]
        batches[t] = replayer.batch(t)
        if fb is None:
            idx = batches[t]
            fb = _mlp_pass(steps, params, data.X[idx], data.y[idx], replayer.weights[idx], t, nodes)
        views[t] = list(zip(unstack_all(params, K), unstack_all(state, K), mlp.member_passes(fb)))
    sizes = torch.cat([torch.full((batches[t].shape[1],), float(batches[t].shape[1]), dtype=delta.dtype)
                       for t in order]).unsqueeze(1)
    for k in range(K):
        scores = []
        for t in order:
            params, state, fb = views[t][k]
            lam[k], s = _mlp(steps[k], params, state, fb, t, lam[k], chunk_size, nodes, scratch[k])
            scores.append(s)
        rows = torch.cat(scores, 1).T / sizes  # [Σ_t B_t, Q]: step t's scores over its batch size
        delta[k].index_add_(0, torch.cat([batches[t][k] for t in order]), rows, alpha=-1.0)


def choose_route(route: str, step: Step, params: Params, input_dim: int = 2):
    """(engine, its static argument) for ``route`` ∈ ROUTES; ``input_dim``: dimensions of a batch
    of inputs (the ``mlp`` route needs [B, features])."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if route == "generic":
        return _generic, None
    if route in ("mlp", "auto"):
        nodes = chain.plan(step.module, list(params), step.recipe.loss_name) if input_dim == 2 else None
        if nodes is not None:
            return _mlp, nodes
        if route == "mlp":
            raise ValueError("route='mlp' needs an nn.Sequential of nn.Linear, supported activations "
                             f"({', '.join(t.__name__ for t in chain.ACTIVATIONS)}) and nn.Dropout, loss "
                             f"'cross_entropy' or 'mse' and inputs [B, features]; use route='auto'")
    if route == "double-backward":
        return _eager, None
    layers = ghost.linear_layers(step.module, list(params))
    if route == "ghost" and layers is None:
        raise ValueError("route='ghost' needs every parameter in an nn.Linear layer (weight or bias); "
                         "use route='generic' or 'double-backward' (or 'auto') for other models")
    return _eager, layers


def measurement_gradient(step: Step, measure, params: Params) -> tuple[Tensor, Params]:
    """(m(θ) [Q], ∇m(θ) as name -> [Q, *shape]); ValueError first if m has no gradient path to
    θ (a detached or non-differentiable measurement would make every δ 0)."""
    def f(p):
        return measure.functional(p, step.buffers, step.module)

    measure.require_gradient_path(params, step.buffers, step.module)
    m = f(params).detach()
    return m, torch.func.jacrev(f)(params)


def reverse(recipe: Recipe, data: Data, slots: list[Member | None], measure, route: str = "auto",
            chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """(m(θ_T) [K, Q], δ [K, N, Q]) for K members swept together, δ(n) = −∂m(θ_T)/∂w_n.

    ``slots``: what :class:`dtda.train.lockstep.Replayer` takes (members trained alone, or one
    training group in slot order with None for absent members, whose rows are then filler). The
    states are replayed as they were trained; the adjoints of all K members advance together,
    step by step, except on the ``mlp`` route, which takes each step's forward/backward pass for
    all K members at once and then sweeps member by member through each checkpoint segment.
    """
    replayer = Replayer(recipe, data, slots)
    members = replayer.slots
    n, K = len(data), len(members)
    steps = [Step(recipe, recipe.build(m.seed), m.seed, replayer.T) for m in members]
    first = members[0].params
    engine, static = choose_route(route, steps[0], first, data.X.dim())
    if isinstance(replayer.group_step, VmapGroupStep) and engine is not _mlp and route in ("auto", "double-backward"):
        engine, static = _vmapped, replayer.group_step
    # the ghost route's Linear layers are modules, hooked while a member's own module runs
    statics = ([ghost.linear_layers(s.module, list(first)) for s in steps] if engine is _eager and static is not None
               else [static] * K)
    ms, grads = zip(*(measurement_gradient(s, measure, m.params) for s, m in zip(steps, members)))
    q = ms[0].shape[0]
    final_state = members[0].record.checkpoints[replayer.T][1]
    lam = (stack(grads), {slot: {k: v.new_zeros((K, q) + v.shape) for k, v in vals.items()}
                          for slot, vals in final_state.items()})  # updated in place by the sweep
    lam = [(unstack(lam[0], k), unstack(lam[1], k)) for k in range(K)]
    delta = torch.zeros(K, n, q, dtype=ms[0].dtype)
    scratch = [{} for _ in range(K)]  # the optimiser adjoint's buffers, reused by every step
    for start, stop in reversed(list(zip(replayer.marks[:-1], replayer.marks[1:]))):
        states = replayer.segment(start, stop)
        if engine is _mlp:
            _mlp_segment(steps, replayer, data, states, start, stop, lam, chunk_size, static, scratch, delta)
            continue
        for t in range(stop - 1, start - 1, -1):
            params, state, fb = states[t - start]
            idx = replayer.batch(t)
            x, y, w = data.X[idx], data.y[idx], replayer.weights[idx]
            if engine is _vmapped:
                lam, lw = _vmapped(steps, params, state, x, y, w, t, lam, chunk_size, static, scratch)
            else:
                lws = []
                for k in range(K):
                    lam[k], lw_k = engine(steps[k], unstack(params, k), unstack(state, k), x[k], y[k], w[k], t,
                                          lam[k], chunk_size, statics[k], scratch[k])
                    lws.append(lw_k)
                lw = torch.stack(lws)
            for k in range(K):
                delta[k].index_add_(0, idx[k], lw[k].T, alpha=-1.0)
        del states
    return torch.stack(ms), delta
