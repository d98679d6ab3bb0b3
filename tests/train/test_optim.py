"""dtda's pure optimisers against torch.optim, step by step, and a whole training run."""

import pytest
import torch
from torch import nn

import dtda.train as T
from dtda.train.optim import SGD, AdamW

CASES = [
    (SGD(0.1), dict(lr=0.1)),
    (SGD(0.1, momentum=0.9), dict(lr=0.1, momentum=0.9)),
    (SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.05),
     dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05)),
    (SGD(0.05, momentum=0.5, weight_decay=0.1), dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
    (AdamW(0.01), dict(lr=0.01)),
    (AdamW(0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1),
     dict(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
]


def _torch_optimizer(ours, params, kwargs):
    cls = torch.optim.SGD if isinstance(ours, SGD) else torch.optim.AdamW
    return cls(params, **kwargs)


@pytest.mark.parametrize("ours,kwargs", CASES, ids=lambda c: repr(c) if not isinstance(c, dict) else "")
def test_update_matches_torch_optim(ours, kwargs):
    gen = torch.Generator().manual_seed(1)
    shapes = {"w": (3, 4), "b": (4,)}
    init = {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
    # a gradient component that stays exactly 0 exercises AdamW's √v at v = 0
    theirs = {k: nn.Parameter(v.clone()) for k, v in init.items()}
    opt = _torch_optimizer(ours, list(theirs.values()), kwargs)
    params, state = dict(init), ours.init(init)
    for t in range(6):
        lr = kwargs["lr"] * (0.5 if t >= 3 else 1.0)  # a schedule: torch reads lr per step
        for group in opt.param_groups:
            group["lr"] = lr
        grads = {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
        grads["b"][0] = 0.0
        for k, p in theirs.items():
            p.grad = grads[k].clone()
        opt.step()
        # SGD's weight decay is the regulariser R = ½λ‖θ‖², whose gradient λθ the step loss adds
        full = {k: g + ours.weight_decay * params[k] for k, g in grads.items()} if isinstance(ours, SGD) else grads
        params, state = ours.update(params, state, full, lr, t)
        for k in shapes:
            torch.testing.assert_close(params[k], theirs[k].detach(), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("ours,kwargs", [CASES[2], CASES[5]], ids=["sgd-nesterov-wd", "adamw"])
def test_training_run_matches_torch_optim(ours, kwargs):
    torch.manual_seed(0)
    X, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,))
    recipe = T.Recipe(lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)), "cross_entropy",
                      ours, batch_size=4, epochs=3, dtype=torch.float64, schedule=("step", 4, 0.5))
    member = T.train_member(recipe, (X, y), seed=3)
    model = recipe.build(3)
    opt = _torch_optimizer(ours, list(model.parameters()), kwargs)
    steps = recipe.num_steps(10)
    for t, idx in enumerate(member.record.batches):
        for group in opt.param_groups:
            group["lr"] = recipe.lr(t, steps)
        opt.zero_grad()
        # the step loss's normaliser is |B_t| = len(idx): cross-entropy's mean
        torch.nn.functional.cross_entropy(model(X[idx]), y[idx]).backward()
        opt.step()
    for k, p in model.named_parameters():
        torch.testing.assert_close(member.params[k], p.detach(), rtol=1e-12, atol=1e-13)


def test_amsgrad_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="amsgrad"):
        AdamW(0.1, amsgrad=True)
    with pytest.raises(ValueError, match="lr"):
        SGD(-1.0)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        SGD(0.1, momentum=1.5)


@pytest.mark.parametrize("ours", [SGD(0.1), SGD(0.1, momentum=0.9, weight_decay=0.1),
                                  SGD(0.1, momentum=0.8, nesterov=True), AdamW(0.01, weight_decay=0.1)],
                         ids=["sgd", "momentum", "nesterov", "adamw"])
def test_closed_form_adjoint_equals_vjp(ours):
    gen = torch.Generator().manual_seed(2)
    params = {"w": torch.randn(3, 4, generator=gen, dtype=torch.float64)}
    state = ours.init(params)
    for t in range(2):  # a state with history; the zero gradient entry keeps AdamW's v at 0
        grads = {"w": torch.randn(3, 4, generator=gen, dtype=torch.float64)}
        grads["w"][0, 0] = 0.0
        params, state = ours.update(params, state, grads, 0.1, t)
    grads = {"w": torch.randn(3, 4, generator=gen, dtype=torch.float64)}
    grads["w"][0, 0] = 0.0
    cot_p = {"w": torch.randn(5, 3, 4, generator=gen, dtype=torch.float64)}
    cot_s = {slot: {"w": torch.randn(5, 3, 4, generator=gen, dtype=torch.float64)} for slot in state}
    _, pull = torch.func.vjp(lambda p, s, g: ours.update(p, s, g, 0.07, 2), params, state, grads)
    expected = torch.func.vmap(pull)((cot_p, cot_s))
    got = ours.adjoint(params, state, grads, 0.07, 2, cot_p, cot_s)
    for e, g in zip(torch.utils._pytree.tree_leaves(expected), torch.utils._pytree.tree_leaves(got)):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, e, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("ours", [SGD(0.1), SGD(0.1, momentum=0.9), SGD(0.1, momentum=0.8, nesterov=True),
                                  AdamW(0.01, weight_decay=0.1)], ids=["sgd", "momentum", "nesterov", "adamw"])
def test_adjoint_in_scratch_buffers_equals_functional_adjoint(ours):
    """Three chained adjoint steps: in place with one scratch dict (as a reverse sweep runs them)
    is bit-identical to the functional form, which leaves its arguments untouched."""
    gen = torch.Generator().manual_seed(3)
    params = {"w": torch.randn(3, 4, generator=gen, dtype=torch.float64)}
    state = ours.init(params)
    grads = {"w": torch.randn(3, 4, generator=gen, dtype=torch.float64)}
    params, state = ours.update(params, state, grads, 0.1, 0)
    cot = ({"w": torch.randn(5, 3, 4, generator=gen, dtype=torch.float64)},
           {slot: {"w": torch.randn(5, 3, 4, generator=gen, dtype=torch.float64)} for slot in state})
    functional = inplace = cot
    functional_args = torch.utils._pytree.tree_map(torch.clone, cot)
    scratch: dict = {}
    for t in range(1, 4):
        fp, fs, fd = ours.adjoint(params, state, grads, 0.07, t, *functional)
        ip, is_, id_ = ours.adjoint(params, state, grads, 0.07, t,
                                    *torch.utils._pytree.tree_map(torch.clone, inplace) if t == 1 else inplace,
                                    scratch=scratch)
        for e, g in zip(torch.utils._pytree.tree_leaves((fp, fs, fd)), torch.utils._pytree.tree_leaves((ip, is_, id_))):
            assert torch.equal(e, g)
        if t == 1:
            for e, g in zip(torch.utils._pytree.tree_leaves(cot), torch.utils._pytree.tree_leaves(functional_args)):
                assert torch.equal(e, g)  # the functional form did not write into its arguments
        functional, inplace = (fp, fs), (ip, is_)
        fp["w"].add_(fd["w"])  # the caller accumulates into the θ-cotangent, as the routes do
        ip["w"].add_(id_["w"])


@pytest.mark.parametrize("ours", [SGD(0.1), SGD(0.1, momentum=0.9, weight_decay=0.1),
                                  SGD(0.1, momentum=0.8, nesterov=True), AdamW(0.01, weight_decay=0.1)],
                         ids=["sgd", "momentum", "nesterov", "adamw"])
def test_sweep_adjoint_gives_the_adjoints_gradient_cotangents(ours):
    """A reverse sweep from the last step (state cotangent 0) over learning rates with a 0 among
    them: the sweep form's γ·u equals the plain adjoint's gradient cotangent at every step, and
    so do the θ-cotangents when the caller adds the same term (standing in for H·d) to both."""
    gen = torch.Generator().manual_seed(4)
    params = {"w": torch.randn(3, 4, generator=gen, dtype=torch.float64)}
    state = ours.init(params)
    grads = {"w": torch.randn(3, 4, generator=gen, dtype=torch.float64)}
    params, state = ours.update(params, state, grads, 0.1, 0)
    rates = [0.07, 0.0, 0.05, 0.03, 0.02]  # steps 1..5; step 5 is the last
    cot_p = {"w": torch.randn(5, 3, 4, generator=gen, dtype=torch.float64)}
    plain = (cot_p, {slot: {"w": torch.zeros(5, 3, 4, dtype=torch.float64)} for slot in state})
    sweep = torch.utils._pytree.tree_map(torch.clone, plain)
    plain_scratch: dict = {}
    sweep_scratch: dict = {}
    for t in range(5, 0, -1):
        lr, lr_next = rates[t - 1], rates[t] if t < 5 else None
        pp, ps, pd = ours.adjoint(params, state, grads, lr, t, *plain, plain_scratch)
        sp, ss, u, scale = ours.sweep_adjoint(params, state, grads, lr, lr_next, t, *sweep, sweep_scratch)
        torch.testing.assert_close(scale * u["w"], pd["w"], rtol=1e-13, atol=1e-15)
        pp["w"].add_(pd["w"].sin())
        sp["w"].add_((scale * u["w"]).sin())
        torch.testing.assert_close(sp["w"], pp["w"], rtol=1e-13, atol=1e-15)
        plain, sweep = (pp, ps), (sp, ss)
