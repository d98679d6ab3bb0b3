"""The hand-derived ``mlp`` route equals the generic route (torch.func vjp of the whole step) to
float64 rounding, for every supported activation, both losses, decay and the optimisers; models
it does not cover fall back (``auto``) or are refused (``route="mlp"``)."""

import pytest
import torch
from torch import nn

import dtda.measure as M
import dtda.train as T
from dtda.attribute import mlp, unroll_member
from dtda.attribute.reverse import choose_route
from dtda.train.step import Step

N = 12


def _data(targets: str):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(N + 2, 3, generator=gen, dtype=torch.float64)
    if targets == "mse":
        y = torch.randn(N + 2, 2, generator=gen, dtype=torch.float64)
    else:
        y = torch.randint(0, 2, (N + 2,), generator=gen)
    return (X[:N], y[:N]), (X[N:], y[N:])


def _chain(*acts, final=None, bias=True):
    def make():
        layers = [nn.Linear(3, 5, bias=bias)]
        for act in acts:
            layers += [act, nn.Linear(5, 5)]
        layers += [nn.Sequential(nn.Linear(5, 2))] + ([final] if final is not None else [])
        return nn.Sequential(*layers)
    return make


MODELS = {
    "tanh-relu": _chain(nn.Tanh(), nn.ReLU()),
    "gelu-sigmoid": _chain(nn.GELU(), nn.Sigmoid()),
    "silu-leaky": _chain(nn.SiLU(), nn.LeakyReLU(0.1), bias=False),
    "dropout-identity": _chain(nn.Sequential(nn.Tanh(), nn.Dropout(0.4)), nn.Identity()),
    "final-tanh": _chain(nn.GELU(), final=nn.Tanh()),
    "linear": lambda: nn.Linear(3, 2),
    # outputs at least mlp.NARROW wide take the R-forward's other products (first layer and later)
    "wide-narrow": lambda: nn.Sequential(nn.Linear(3, 40), nn.Tanh(), nn.Linear(40, 33, bias=False), nn.GELU(),
                                         nn.Linear(33, mlp.NARROW + 1), nn.ReLU(), nn.Linear(mlp.NARROW + 1, 2)),
}
OPTIMIZERS = {
    "sgd": T.SGD(0.2),
    "momentum-decay": T.SGD(0.2, momentum=0.9, weight_decay=0.05),
    "nesterov": T.SGD(0.1, momentum=0.8, nesterov=True, weight_decay=0.01),
    "adamw": T.AdamW(0.03, weight_decay=0.1),
}


def _compare(model, loss, optimizer, batching="epoch"):
    train, (Xq, _) = _data(loss)
    recipe = T.Recipe(model, loss, optimizer, batch_size=5, steps=10, batching=batching,
                      schedule=("warmup", 2, "cosine"), dtype=torch.float64, checkpoint_every=4)
    member = T.train_member(recipe, train, seed=3)
    measure = M.custom(lambda m: torch.cat([m(Xq).reshape(-1), m(Xq).square().sum().reshape(1)]))
    _, generic = unroll_member(recipe, train, member, measure, route="generic")
    _, fast = unroll_member(recipe, train, member, measure, route="mlp")
    torch.testing.assert_close(fast, generic, rtol=1e-10, atol=1e-13 * generic.abs().max().item())
    assert generic.abs().max() > 0


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_mlp_route_equals_generic_for_activations_and_losses(model, loss):
    _compare(MODELS[model], loss, OPTIMIZERS["momentum-decay"])


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_mlp_route_equals_generic_for_optimizers(optimizer):
    _compare(MODELS["tanh-relu"], "cross_entropy", OPTIMIZERS[optimizer], batching="iid")


def _step(model, loss="cross_entropy"):
    recipe = T.Recipe(model, loss, T.SGD(0.1), batch_size=4, steps=2, dtype=torch.float64)
    module = recipe.build(0)
    return Step(recipe, module, 0, 2), dict(module.named_parameters())


@pytest.mark.parametrize("model, loss", [
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)), "cross_entropy"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.GELU(approximate="tanh"), nn.Linear(4, 2)), "cross_entropy"),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), lambda f, y: (f - y).abs().sum(1)),
])
def test_unsupported_models_fall_back(model, loss):
    step, params = _step(model, loss)
    assert mlp.plan(step.module, list(params), step.recipe.loss_name) is None
    engine, _ = choose_route("auto", step, params)
    assert engine.__name__ != "_mlp"
    with pytest.raises(ValueError, match="route='mlp' needs"):
        choose_route("mlp", step, params)


def test_shared_layer_and_multidimensional_inputs_fall_back():
    shared = nn.Linear(4, 4)
    step, params = _step(lambda: nn.Sequential(nn.Linear(3, 4), shared, nn.Tanh(), shared, nn.Linear(4, 2)))
    assert mlp.plan(step.module, list(params), "cross_entropy") is None
    step, params = _step(lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)))
    assert choose_route("auto", step, params, input_dim=2)[0].__name__ == "_mlp"
    assert choose_route("auto", step, params, input_dim=3)[0].__name__ != "_mlp"
