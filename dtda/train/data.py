"""Training data as two tensors: inputs X [N, ...] and targets y [N, ...]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dtda.train import checks


@dataclass(frozen=True)
class Data:
    """Inputs ``X`` [N, ...] (in the recipe's dtype when floating) and targets ``y`` [N, ...]."""

    X: Tensor
    y: Tensor

    def __len__(self) -> int:
        return self.X.shape[0]


def as_data(train, dtype: torch.dtype, loss_name: str | None = None) -> Data:
    """``train`` as :class:`Data`: an ``(X, y)`` pair of tensors or a map-style Dataset of (x, y).

    Floating inputs are cast to ``dtype``; integer inputs are kept (index inputs such as
    ``nn.Embedding`` need them; a model that cannot take them is reported by
    :func:`dtda.train.checks.first_batch`). Targets become int64 for cross-entropy and ``dtype``
    for mse (other losses keep integer targets and cast floating ones to ``dtype``). X and y must
    hold data (not the meta device) and finite values: ValueError naming the first bad entry.
    """
    if isinstance(train, Data):
        X, y = train.X, train.y
    elif isinstance(train, (tuple, list)) and len(train) == 2 and all(isinstance(t, Tensor) for t in train):
        X, y = train
    elif hasattr(train, "__getitem__") and hasattr(train, "__len__"):
        n = len(train)
        if n == 0:
            raise ValueError("train: the dataset is empty")
        items = [train[i] for i in range(n)]
        if not all(isinstance(it, (tuple, list)) and len(it) == 2 for it in items[:1]):
            raise TypeError(f"train: dataset items must be (x, y) pairs, got {type(items[0]).__name__}")
        X = torch.stack([torch.as_tensor(x) for x, _ in items])
        y = torch.stack([torch.as_tensor(t) for _, t in items])
    else:
        raise TypeError(f"train must be an (X, y) pair of tensors or a map-style Dataset of (x, y), "
                        f"got {type(train).__name__}")
    if X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"train: X and y must have the same non-zero length, got X {tuple(X.shape)} "
                         f"and y {tuple(y.shape)}")
    checks.tensors(X, y, "train")
    if torch.is_floating_point(X):
        X = X.to(dtype)
    if loss_name == "cross_entropy":
        if torch.is_floating_point(y):
            raise ValueError(f"train: cross_entropy needs integer class targets, got y of {y.dtype}")
        y = y.long()
    elif loss_name == "mse" or torch.is_floating_point(y):
        y = y.to(dtype)
    return Data(X.contiguous(), y.contiguous())
