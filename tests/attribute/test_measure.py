"""Measurements: values, names, functional form and eval mode."""

import pytest
import torch
from torch import nn

import dtda.measure as M


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Dropout(0.5), nn.Linear(4, 3)).double()


def test_values_and_names():
    model = _model()
    X = torch.randn(5, 3)
    y = torch.tensor([0, 2, 1, 1, 0])
    z = model.eval()(X.double()).detach()
    margin = M.margin(X, y)
    expected = torch.stack([z[i, y[i]] - torch.logsumexp(z[i][torch.arange(3) != y[i]], 0) for i in range(5)])
    torch.testing.assert_close(margin(model), expected)
    assert margin.names == [f"margin[{i}]" for i in range(5)]
    torch.testing.assert_close(M.loss(X, y)(model), torch.nn.functional.cross_entropy(z, y, reduction="none"))
    yr = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(M.loss(X, yr)(model), (z - yr).square().mean(1))  # mse for float targets
    out = M.output(X)
    torch.testing.assert_close(out(model), z.reshape(-1))
    assert out.names[:4] == ["output[0,0]", "output[0,1]", "output[0,2]", "output[1,0]"]


def test_functional_form_and_eval_mode():
    model = _model().train()
    X, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    measure = M.margin(X, y)
    params = {k: v.detach() * 1.5 for k, v in model.named_parameters()}
    shifted = _model()
    with torch.no_grad():
        for k, p in shifted.named_parameters():
            p.copy_(params[k])
    # dropout is off in both forms, and the module's own mode is restored
    torch.testing.assert_close(measure.functional(params, {}, model), measure(shifted))
    torch.testing.assert_close(measure(model), measure(model))
    assert model.training


def test_custom_and_errors():
    model = _model()
    X = torch.randn(4, 3, dtype=torch.float64)
    named = M.custom(lambda m: m(X).sum(1), names=["a", "b", "c", "d"])
    assert named(model).shape == (4,)
    assert M.as_measurement(lambda m: m(X)[:, 0]).names_for(4) == ["m[0]", "m[1]", "m[2]", "m[3]"]
    with pytest.raises(ValueError, match="1-D"):
        M.custom(lambda m: m(X))(model)
    with pytest.raises(ValueError, match="3 names"):
        M.custom(lambda m: m(X).sum(1), names=["a", "b", "c"])(model)
    with pytest.raises(ValueError, match="integer class labels"):
        M.margin(X, torch.randn(4))
    with pytest.raises(TypeError):
        M.as_measurement(3)
