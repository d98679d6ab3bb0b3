"""The replayable training recipe."""

from __future__ import annotations

import inspect

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from dtda.train import losses, schedule
from dtda.train.optim import SGD, AdamW
from dtda.train.seeds import stream_seed

BATCHING = ("epoch", "iid")


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Recipe: {name} must be a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class Recipe:
    """Everything that fixes a training run except the seed and the data.

    model: zero-argument factory returning an ``nn.Module`` (called under the member's init seed).
    loss: "cross_entropy", "mse" or a callable ``(outputs, targets) -> per-example losses [B]``.
    optimizer: :class:`dtda.SGD` or :class:`dtda.AdamW`.
    batch_size: B. epochs or steps: exactly one; with epochs, T = epochs · ⌈N/B⌉.
    schedule: see :mod:`dtda.train.schedule` ("constant", "cosine", "linear",
        ("step", step_size, gamma), ("warmup", warmup_steps, then)).
    batching: "epoch" (a fresh permutation each epoch, last batch may be short) or "iid"
        (each step draws B indices uniformly with replacement: a multiset).
    dtype: parameter and input dtype. checkpoint_every: C (default ⌈√T⌉).

    Step loss (PAPER §1): L_t = (1/|B_t|) Σ_{n∈B_t} w_n ℓ_n(θ) + R(θ), |B_t| ignores w.
    """

    model: Callable[[], nn.Module]
    loss: str | Callable
    optimizer: SGD | AdamW
    batch_size: int
    epochs: int | None = None
    steps: int | None = None
    schedule: object = "constant"
    batching: str = "epoch"
    dtype: torch.dtype = torch.float32
    checkpoint_every: int | None = None
    loss_fn: Callable = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not callable(self.model) or isinstance(self.model, nn.Module):
            raise TypeError("Recipe: model must be a zero-argument factory returning an nn.Module "
                            f"(e.g. lambda: nn.Linear(4, 2)), got {type(self.model).__name__}")
        object.__setattr__(self, "loss_fn", losses.resolve(self.loss))
        if not isinstance(self.optimizer, (SGD, AdamW)):
            raise TypeError(f"Recipe: optimizer must be dtda.SGD(...) or dtda.AdamW(...), "
                            f"got {type(self.optimizer).__name__}")
        _positive_int("batch_size", self.batch_size)
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(f"Recipe: give exactly one of epochs and steps, got epochs={self.epochs!r}, "
                             f"steps={self.steps!r}")
        if self.epochs is not None:
            _positive_int("epochs", self.epochs)
        else:
            _positive_int("steps", self.steps)
        object.__setattr__(self, "schedule", schedule.check_schedule(self.schedule))
        if self.batching not in BATCHING:
            raise ValueError(f"Recipe: batching must be one of {BATCHING}, got {self.batching!r}")
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Recipe: dtype must be torch.float32 or torch.float64, got {self.dtype}")
        if self.checkpoint_every is not None:
            _positive_int("checkpoint_every", self.checkpoint_every)

    @property
    def loss_name(self) -> str | None:
        return self.loss if isinstance(self.loss, str) else None

    def num_steps(self, n: int) -> int:
        """T for N = ``n`` training examples."""
        if self.steps is not None:
            return self.steps
        return self.epochs * math.ceil(n / self.batch_size)

    def every(self, n: int) -> int:
        """Checkpoint spacing C."""
        return self.checkpoint_every or max(1, math.ceil(math.sqrt(self.num_steps(n))))

    def lr(self, t: int, T: int) -> float:
        """η_t: the optimiser's base rate times the schedule's multiplier."""
        return self.optimizer.lr * schedule.multiplier(self.schedule, t, T)

    def build(self, seed: int) -> nn.Module:
        """Member ``seed``'s initial module (its ``init`` stream), in the recipe's dtype."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(seed, "init"))
            module = self.model()
        if not isinstance(module, nn.Module):
            raise TypeError(f"Recipe: model() must return an nn.Module, got {type(module).__name__}")
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                raise ValueError(f"Recipe: model contains {type(sub).__name__}; batch statistics "
                                 "couple examples and break the per-example weighted loss. "
                                 "Use LayerNorm or GroupNorm instead")
        return module.to(self.dtype)

    def batches(self, n: int, seed: int) -> list[torch.Tensor]:
        """Member ``seed``'s batch indices per step (its ``batches`` stream): T tensors of int64."""
        gen = torch.Generator()
        gen.manual_seed(stream_seed(seed, "batches"))
        T, B = self.num_steps(n), self.batch_size
        if self.batching == "iid":
            return [torch.randint(n, (B,), generator=gen) for _ in range(T)]
        out: list[torch.Tensor] = []
        while len(out) < T:
            out.extend(torch.randperm(n, generator=gen).split(B))
        return out[:T]

    def describe(self) -> dict:
        """A JSON-able description (fingerprints stored members)."""
        def name(f):
            # Functions by qualified name; configured callables (dataclass factories) by repr,
            # so an architecture change changes the fingerprint.
            if isinstance(f, str):
                return f
            if inspect.isfunction(f) or inspect.isclass(f):
                return f.__qualname__
            text = repr(f)
            return type(f).__qualname__ if " at 0x" in text else text  # no per-process addresses
        return {"model": name(self.model), "loss": name(self.loss),
                "optimizer": self.optimizer.describe(), "batch_size": self.batch_size,
                "epochs": self.epochs, "steps": self.steps, "schedule": self.schedule,
                "batching": self.batching, "dtype": str(self.dtype).removeprefix("torch."),
                "checkpoint_every": self.checkpoint_every}
