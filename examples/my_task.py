"""Bring your own model and data: ``data.source = "examples.my_task:task"`` (run from the repository
root, or put this module anywhere on PYTHONPATH, on every worker for process and Ray executors)."""

import torch
from torch import nn


def task():
    """Returns (model_factory, train, test); train and test are (X, y) tensors or map-style Datasets."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(300, 5, generator=g)
    y = (X[:, 0] - 0.5 * X[:, 1] > 0).long()  # integer targets: classification

    def model():
        return nn.Sequential(nn.Linear(5, 32), nn.Tanh(), nn.Linear(32, 2))

    return model, (X[:240], y[:240]), (X[240:], y[240:])
