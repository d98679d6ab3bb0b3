"""The influence core's query gradients: per-row measurements (losses, margins) take one backward
with the layer capture, every other measurement ``torch.func.jacrev``; both routes give the same
∇m in float64, on token Linear layers, Conv2d and a layer called twice."""

import importlib
from unittest import mock

import pytest
import torch
from torch import nn

import dtda.measure as M
from dtda.attribute.reverse import measurement_gradient
from dtda.curvature import find_layers
from dtda.curvature.capture import row_gradients
import dtda.train as T
from dtda.train.step import Step

influence_module = importlib.import_module("dtda.attribute.influence")  # the package re-exports the function


class _Tokens(nn.Module):
    """x [B, T, 3] -> mean over tokens of an MLP applied per token, its first layer called twice."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(torch.tanh(self.fc1(x))))).mean(1)


class _Flattening(nn.Module):
    """Folds tokens into the batch before its Linear: the capture cannot tell the query rows apart."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x.reshape(-1, 3)).reshape(x.shape).mean(1)


def _conv():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3))


def _route(model, X, measure):
    """(query_gradient's (m, ∇m), jacrev's (m, ∇m) over the covered parameters, jacrev called?)."""
    torch.manual_seed(0)
    module = model().to(torch.float64).eval()
    params = {k: p.detach() for k, p in module.named_parameters()}
    recipe = T.Recipe(model=model, loss="cross_entropy", batch_size=2, epochs=1, dtype=torch.float64,
                      optimizer=T.SGD(0.1))
    step = Step(recipe, module, 0, 1)
    layers = find_layers(module)
    with mock.patch.object(influence_module, "measurement_gradient", wraps=measurement_gradient) as jac:
        got = influence_module.query_gradient(step, measure, params, layers)
    m, want = measurement_gradient(step, measure, params)
    return got, (m, {k: want[k] for k in got[1]}), jac.called


@pytest.mark.parametrize("model, shape", [(_Tokens, (5, 4, 3)), (_conv, (5, 1, 4, 4))])
@pytest.mark.parametrize("kind", ["loss", "margin"])
def test_per_row_measurements_take_one_backward_equal_to_jacrev(model, shape, kind):
    gen = torch.Generator().manual_seed(1)
    X, y = torch.randn(*shape, generator=gen, dtype=torch.float64), torch.tensor([0, 2, 1, 1, 0])
    measure = M.loss(X, y) if kind == "loss" else M.margin(X, y)
    (m, grads), (m_ref, ref), used_jacrev = _route(model, X, measure)
    assert not used_jacrev and measure.per_row
    torch.testing.assert_close(m, m_ref, rtol=1e-14, atol=1e-14)
    assert sorted(grads) == sorted(k for k, _ in model().named_parameters())
    for k in ref:
        torch.testing.assert_close(grads[k], ref[k], rtol=1e-12, atol=1e-14)


def test_other_measurements_and_unseparable_rows_take_jacrev():
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(3, 4, 3, generator=gen, dtype=torch.float64)
    out = M.output(X)
    assert not out.per_row
    (_, grads), (_, ref), used_jacrev = _route(_Tokens, X, out)
    assert used_jacrev and all(torch.equal(grads[k], ref[k]) for k in ref)
    # per-row measurement, but the model folds tokens into the batch: the rows cannot be told apart
    loss = M.loss(X, torch.tensor([0, 1, 2]))
    module = _Flattening().to(torch.float64)
    params = {k: p.detach() for k, p in module.named_parameters()}
    assert row_gradients(find_layers(module), params, lambda p: loss.functional(p, {}, module)) is None
    (_, grads), (_, ref), used_jacrev = _route(_Flattening, X, loss)
    assert used_jacrev
    for k in ref:
        torch.testing.assert_close(grads[k], ref[k], rtol=0, atol=0)



class _Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x).detach()


def test_per_row_measurement_without_a_gradient_path_is_refused():
    X = torch.randn(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="no gradient path to the parameters"):
        _route(_Detached, X, M.loss(X, torch.tensor([0, 1])))
