"""Measurements: differentiable functions of a trained model, m: model -> [Q].

A :class:`Measurement` is callable on a module (``m(model)`` returns [Q]) and functionally on
parameters (``m.functional(params, buffers, module)``, for ``torch.func``), and carries
``names`` (Q strings). The model is evaluated in eval mode (no dropout).

- :func:`loss`: per-query loss ℓ(f(x_q), y_q) (cross-entropy for integer y, mse otherwise).
- :func:`margin`: correct-class margin z_y − logsumexp_{j≠y} z_j.
- :func:`output`: the model outputs f(X), flattened (Q = len(X) · outputs per query).
- :func:`custom`: any callable ``model -> [Q]`` built from differentiable torch operations.

Test inputs must hold finite values (ValueError naming the first bad entry, at construction),
class labels must fit the model's outputs, and a measurement must have a gradient path to the
parameters (:meth:`Measurement.require_gradient_path`, checked before unrolling).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from dtda.train import checks
from dtda.train import losses as _losses
from dtda.train.step import mode


class Measurement:
    """Base class: subclasses implement :meth:`evaluate` (module in eval mode -> [Q])."""

    names: list[str] | None = None
    #: True when m_q depends on query row q of X only, through one call of the model on X (per-query
    #: losses and margins): then every ∇m_q comes from one backward of Σ_q m_q (rows do not interact)
    #: instead of one backward per query.
    per_row: bool = False

    def evaluate(self, module: nn.Module) -> Tensor:
        raise NotImplementedError

    def functional(self, params: dict, buffers: dict, module: nn.Module) -> Tensor:
        """m at ``params`` (and ``buffers``) for ``module``'s architecture: [Q]."""
        holder = _Holder(self, module)
        state = {**{f"model.{k}": v for k, v in params.items()},
                 **{f"model.{k}": v for k, v in buffers.items()}}
        with mode(module, False):
            return functional_call(holder, state, ())

    def __call__(self, model: nn.Module) -> Tensor:
        with mode(model, False):
            out = self.evaluate(model)
        return self._check(out)

    def _check(self, out: Tensor) -> Tensor:
        if not isinstance(out, Tensor) or out.dim() != 1:
            raise ValueError(f"measurement must return a 1-D tensor [Q], got "
                             f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
        if self.names is not None and len(self.names) != out.shape[0]:
            raise ValueError(f"measurement returned Q = {out.shape[0]} values but has "
                             f"{len(self.names)} names")
        return out

    def require_gradient_path(self, params: dict, buffers: dict, module: nn.Module) -> None:
        """Raise ValueError unless m at ``params`` depends differentiably on them: a detached
        or non-differentiable measurement (argmax, comparisons, ``.item()``, ``torch.no_grad``)
        would give δ ≡ 0 for every example. One forward pass with autograd."""
        leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
        with torch.enable_grad():
            self.check_gradient_path(self.functional(leaves, buffers, module))

    def check_gradient_path(self, out: Tensor) -> Tensor:
        """``out``, m evaluated at parameters that require grad, unchanged; ValueError as
        :meth:`require_gradient_path` when it has no gradient path to them."""
        if not out.requires_grad:
            raise ValueError("measurement has no gradient path to the parameters (it is detached, or "
                             "built from argmax, comparisons, .item() or under torch.no_grad), so every "
                             "removal effect would be 0; measure a differentiable quantity instead, e.g. "
                             "dtda.measure.margin or dtda.measure.loss rather than accuracy")
        return out

    def names_for(self, q: int) -> list[str]:
        """The names, or ``m[0]..m[q-1]`` for a custom measurement without names."""
        return list(self.names) if self.names is not None else [f"m[{i}]" for i in range(q)]


class _Holder(nn.Module):
    """Wraps a module so ``functional_call`` can swap its parameters around ``m.evaluate``."""

    def __init__(self, measurement: Measurement, module: nn.Module):
        super().__init__()
        self.measurement = measurement
        self.model = module

    def forward(self) -> Tensor:
        return self.measurement._check(self.measurement.evaluate(self.model))


def _inputs(module: nn.Module, X: Tensor) -> Tensor:
    p = next(module.parameters(), None)
    if p is not None and torch.is_floating_point(X):
        return X.to(device=p.device, dtype=p.dtype)
    return X


class _Loss(Measurement):
    per_row = True

    def __init__(self, X: Tensor, y: Tensor, loss):
        checks.tensors(X, y, "loss")
        self.X, self.y = X, y
        self.loss_fn = _losses.resolve(loss if loss is not None else _losses.default_for(y))
        self.names = [f"loss[{i}]" for i in range(len(X))]

    def evaluate(self, module):
        out = module(_inputs(module, self.X))
        if self.loss_fn is _losses.cross_entropy:
            checks.class_labels(self.y, out.shape[1], "loss")
        y = self.y if not torch.is_floating_point(self.y) else self.y.to(out.dtype)
        return self.loss_fn(out, y)


class _Margin(Measurement):
    per_row = True

    def __init__(self, X: Tensor, y: Tensor):
        if torch.is_floating_point(y):
            raise ValueError(f"margin: y must hold integer class labels, got {y.dtype}")
        checks.tensors(X, y, "margin")
        self.X, self.y = X, y.long()
        self.names = [f"margin[{i}]" for i in range(len(X))]

    def evaluate(self, module):
        z = module(_inputs(module, self.X))
        if z.dim() != 2 or z.shape[1] < 2:
            raise ValueError(f"margin: the model must output logits [Q, C] with C ≥ 2, got {tuple(z.shape)}")
        checks.class_labels(self.y, z.shape[1], "margin")
        correct = z.gather(1, self.y[:, None]).squeeze(1)
        others = z.masked_fill(torch.nn.functional.one_hot(self.y, z.shape[1]).bool(), float("-inf"))
        return correct - torch.logsumexp(others, dim=1)


class _Output(Measurement):
    def __init__(self, X: Tensor):
        checks.materialised(X, "output: X")
        checks.finite(X, "output: X")
        self.X = X
        self.names = None

    def evaluate(self, module):
        out = module(_inputs(module, self.X))
        if self.names is None:
            per = out[0].numel() if out.dim() > 1 else 1
            self.names = ([f"output[{i}]" for i in range(len(self.X))] if per == 1 and out.dim() == 1
                          else [f"output[{i},{j}]" for i in range(len(self.X)) for j in range(per)])
        return out.reshape(-1)


class _Custom(Measurement):
    def __init__(self, fn: Callable[[nn.Module], Tensor], names):
        self.fn = fn
        self.names = list(names) if names is not None else None

    def evaluate(self, module):
        return self.fn(module)


def loss(X: Tensor, y: Tensor, loss=None) -> Measurement:
    """Per-query loss [Q = len(X)]; ``loss`` as in :class:`dtda.Recipe` (default by y's dtype)."""
    return _Loss(X, y, loss)


def margin(X: Tensor, y: Tensor) -> Measurement:
    """Correct-class margin z_y − logsumexp_{j≠y} z_j [Q = len(X)]."""
    return _Margin(X, y)


def output(X: Tensor) -> Measurement:
    """The model outputs f(X) flattened [Q = len(X) · outputs per example]."""
    return _Output(X)


def custom(fn: Callable[[nn.Module], Tensor], names=None) -> Measurement:
    """Any differentiable ``fn(model) -> [Q]`` as a measurement (``names``: Q strings or None)."""
    if not callable(fn):
        raise TypeError(f"custom: fn must be callable model -> [Q], got {type(fn).__name__}")
    return _Custom(fn, names)


def as_measurement(measure) -> Measurement:
    """A :class:`Measurement` as is; any other callable ``model -> [Q]`` wrapped by :func:`custom`."""
    if isinstance(measure, Measurement):
        return measure
    if callable(measure):
        return _Custom(measure, None)
    raise TypeError(f"measure must be a dtda.measure Measurement or a callable model -> [Q], "
                    f"got {type(measure).__name__}")
