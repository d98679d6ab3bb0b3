"""Checks of data and of a training run: one clear error (what, the bad value, where, the fix)
before work starts, or as soon as a run goes wrong.

- :func:`tensors`: inputs and targets hold data (not the meta device) and finite values.
- :func:`first_batch`: one forward pass on the first examples before training: the features
  reach the model, class labels fit its outputs, mse targets match its output shape.
- :func:`class_labels`: integer labels in [0, C) for a model with C outputs.
- :class:`LossWatch`: per-step losses of one member: non-finite stops at once, divergence to
  finite garbage fails the seed when training ends.

Integer features are kept as they are (index inputs such as ``nn.Embedding`` need them); a model
that cannot take them gets a ValueError telling to cast them, instead of a dtype mismatch deep in
a matmul.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _where(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def materialised(t: Tensor, what: str) -> None:
    """``t`` holds data: not on the meta device."""
    if t.device.type == "meta":
        raise ValueError(f"{what} is on the meta device (a tensor without data); create or load it "
                         "with real values, e.g. on the CPU")


def finite(t: Tensor, what: str) -> None:
    """Floating ``t`` holds no NaN or ±Inf; else a ValueError naming the first one and its index."""
    if not torch.is_floating_point(t):
        return
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{what} holds {t[index].item()} at {_where(index)} ({int(bad.sum())} non-finite "
                         "value(s)); remove or impute those entries")


def tensors(X: Tensor, y: Tensor, what: str) -> None:
    """Inputs X and targets y hold data and finite values (floating ones)."""
    for name, t in (("X", X), ("y", y)):
        materialised(t, f"{what}: {name}")
        finite(t, f"{what}: {name}")


def class_labels(y: Tensor, n_classes: int, what: str) -> None:
    """Integer labels ``y`` lie in [0, n_classes); else a ValueError naming the first bad one."""
    bad = (y < 0) | (y >= n_classes)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        where = index[0] if len(index) == 1 else _where(index)
        raise ValueError(f"{what}: label {int(y[index])} at index {where} is out of range for a model with "
                         f"{n_classes} outputs (classes 0..{n_classes - 1}); fix the labels or give the "
                         "model one output per class")


def first_batch(module: nn.Module, X: Tensor, y: Tensor, loss_name: str | None, batch_size: int) -> None:
    """One forward pass (eval mode, no grad, global RNG untouched) on the first ``batch_size``
    examples of X, then the checks that need the model's outputs [B, ...]: every class label of
    y against the output width (cross-entropy), or the targets' shape per example against the
    outputs' (mse; [N] targets fit one output). Custom losses are not checked."""
    training = module.training
    try:
        module.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = module(X[:batch_size])
    except RuntimeError as e:
        if torch.is_floating_point(X):
            raise
        raise ValueError(f"train: X holds integer features ({X.dtype}) that the model cannot take ({e}); "
                         "cast them with X.float() (integer inputs are kept as they are for index "
                         "inputs such as nn.Embedding)") from e
    finally:
        module.train(training)
    if loss_name == "cross_entropy":
        if out.dim() < 2:
            raise ValueError(f"train: cross_entropy needs logits [B, C] from the model, got outputs of "
                             f"shape {list(out.shape)}")
        class_labels(y, out.shape[1], "train: y")
    elif loss_name == "mse":
        per_output, per_target = out[0].numel(), y[0].numel()
        if per_output != per_target:
            raise ValueError(f"train: mse targets are {list(y.shape[1:]) or [1]} per example but the model "
                             f"outputs {list(out.shape[1:])} per example; give targets of the outputs' shape")


class TrainingDiverged(FloatingPointError):
    """Training ended with losses orders of magnitude above where it started (finite garbage)."""


class LossWatch:
    """The losses of one member's training run, step by step.

    A non-finite loss raises ``FloatingPointError`` at once (naming seed, step and examples).
    At the end, training counts as diverged when the mean loss over the last tenth of the steps
    exceeds :attr:`RATIO` times that over the first tenth: SGD noise and schedules move a loss by
    small factors, a learning rate past stability multiplies it by orders of magnitude (the
    reported case: 2.3 to 5,581). Divergence fails the seed (:class:`TrainingDiverged`, a
    ``FloatingPointError``) rather than warning: the member's parameters are garbage, so its
    removal effects are too, yet finite, so a warning (easily lost in a worker process) would let
    them into the statistics silently; a failed seed is recorded in the run's ``failures.json``
    with the fix, as a non-finite loss is.
    """

    RATIO = 100.0

    def __init__(self, seed: int, steps: int, lr: float):
        self.seed, self.steps, self.lr = seed, steps, lr
        self.means: list[float] = []

    def step(self, t: int, idx: Tensor, losses: Tensor) -> None:
        """Record step ``t``'s per-example losses [B] of the examples ``idx`` [B]."""
        finite_ = torch.isfinite(losses)
        if not bool(finite_.all()):
            bad = idx[~finite_].tolist()
            raise FloatingPointError(f"seed {self.seed}: non-finite training loss at step {t} of {self.steps} "
                                     f"for examples {bad} (lower the learning rate or check the data)")
        self.means.append(float(losses.detach().mean()))

    @staticmethod
    def step_group(watches: list[LossWatch], t: int, idx: Tensor, losses: Tensor,
                   errors: dict[int, FloatingPointError]) -> None:
        """:meth:`step` for the K members of a group (idx, losses [K, B]) with one finiteness test and
        one mean for the group (per member only where a loss is not finite): member k's
        ``FloatingPointError`` lands in ``errors[k]``, and a member in ``errors`` is skipped."""
        finite = torch.isfinite(losses).all(1).tolist()
        means = losses.detach().mean(1).tolist()
        for k, watch in enumerate(watches):
            if k in errors:
                continue
            if finite[k]:
                watch.means.append(means[k])
                continue
            try:
                watch.step(t, idx[k], losses[k])
            except FloatingPointError as e:  # this member stops counting; the others go on
                errors[k] = e

    def finish(self) -> None:
        """Raise :class:`TrainingDiverged` if the run diverged (see the class docstring)."""
        w = max(1, math.ceil(len(self.means) / 10))
        first, last = sum(self.means[:w]) / w, sum(self.means[-w:]) / w
        if last > self.RATIO * max(first, 1e-8):
            raise TrainingDiverged(f"seed {self.seed}: training diverged: the mean loss rose from {first:.4g} "
                                   f"(first {w} step(s)) to {last:.4g} (last {w}) at learning rate {self.lr:g}; "
                                   "lower the learning rate")
