"""Per-example losses ``(outputs [B, ...], targets [B, ...]) -> [B]``.

- ``cross_entropy``: −log softmax(z)_y for logits z [B, C] and integer targets y [B].
- ``mse``: mean over output dimensions of (f − y)², with y reshaped to the outputs' shape.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


def mse(outputs: Tensor, targets: Tensor) -> Tensor:
    diff = outputs - targets.reshape(outputs.shape).to(outputs.dtype)
    return diff.square().reshape(outputs.shape[0], -1).mean(1)


LOSSES = {"cross_entropy": cross_entropy, "mse": mse}


def resolve(loss) -> LossFn:
    """A loss name in :data:`LOSSES` or a callable ``(outputs, targets) -> [B]``."""
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable "
                             f"(outputs, targets) -> per-example losses [B], got {loss!r}")
        return LOSSES[loss]
    if callable(loss):
        return loss
    raise TypeError(f"loss must be a name in {sorted(LOSSES)} or a callable, got {type(loss).__name__}")


def default_for(targets: Tensor) -> str:
    """cross-entropy for integer targets, mse otherwise."""
    return "cross_entropy" if not torch.is_floating_point(targets) else "mse"
