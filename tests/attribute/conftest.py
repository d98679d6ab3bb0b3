"""Shared fixtures of the attribute tests."""

import pytest
import torch

import dtda.measure as M

#: Training examples in the tiny classification data of :func:`data`.
TINY_N = 12


@pytest.fixture(scope="module")
def data():
    """((X [12, 3], y [12]) float64 with 3 classes, the loss measurement on 2 held-out points)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(TINY_N + 2, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (TINY_N + 2,), generator=gen)
    return (X[:TINY_N], y[:TINY_N]), M.loss(X[TINY_N:], y[TINY_N:])
