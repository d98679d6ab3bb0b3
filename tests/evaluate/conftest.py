"""Tiny problems for the evaluation tests: float64 regression with a picklable model factory."""

import pytest
import torch

import dtda
import dtda.train as T
from dtda import measure
from dtda.models import MLP


def regression(n: int = 16, d: int = 2, q: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n + q, d, generator=gen, dtype=torch.float64)
    y = X @ torch.randn(d, generator=gen, dtype=torch.float64) + 0.3 * torch.randn(n + q, generator=gen,
                                                                                   dtype=torch.float64)
    return (X[:n], y[:n]), (X[n:], y[n:])


def recipe(widths=(), lr=0.05, epochs=4, batch_size=4, activation="tanh"):
    return T.Recipe(MLP(2, tuple(widths), 1, activation), "mse", T.SGD(lr, momentum=0.5), batch_size,
                    epochs=epochs, dtype=torch.float64)


class Problem:
    """A recipe, its data, a measurement, the attributed samples (reverse UD) of ``seeds`` seeds."""

    def __init__(self, widths=(), seeds=4, **kw):
        self.train, (Xq, _) = regression()
        self.recipe = recipe(widths, **kw)
        self.measure = measure.output(Xq)
        ens = dtda.train_ensemble(self.recipe, self.train, seeds)
        self.samples = dtda.attribute.unroll(ens, self.measure)


@pytest.fixture(scope="session")
def linear():
    return Problem()


@pytest.fixture(scope="session")
def hidden():
    """A hidden layer: a member trained alone differs from its lockstep-group twin in the last bits."""
    return Problem(widths=(8,))
