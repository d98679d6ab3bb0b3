"""SeedSamples: per-seed measurements and removal effects, the hinge between estimators and statistics.

Every attribution method (unrolled differentiation, influence functions, masked retraining, ...)
produces a :class:`SeedSamples`; every distributional statistic and every evaluation consumes one.

Shapes: K seeds, N training examples (or G removal groups), Q measurements.

- ``m`` [K, Q]: the measurement of each seed's model trained on the full data (before removal).
- ``delta`` [K, N, Q]: removal effects ``δ_s(k) ≈ m(θ_s(D∖k)) − m(θ_s(D))`` (after − before),
  or [K, G, Q] per removal group when ``groups`` is set (``δ_s(G) = Σ_{k∈G} δ_s(k)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class SeedSamples:
    """Per-seed measurements ``m`` [K, Q] and removal effects ``delta`` [K, N, Q] (or [K, G, Q]).

    ``seeds`` names the K seeds, ``names`` the Q measurements, ``method`` the estimator that
    produced ``delta``; ``groups`` lists the removal groups (training-example indices) when
    ``delta`` is per group, and ``meta`` carries JSON-able provenance.
    """

    m: Tensor
    delta: Tensor
    seeds: list[int]
    names: list[str]
    method: str
    groups: list[list[int]] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.m, Tensor):
            raise TypeError(f"SeedSamples: m must be a torch.Tensor [K, Q], got {type(self.m).__name__}")
        if not isinstance(self.delta, Tensor):
            raise TypeError(
                f"SeedSamples: delta must be a torch.Tensor [K, N, Q], got {type(self.delta).__name__}")
        if self.m.dim() != 2:
            raise ValueError(f"SeedSamples: m must be 2-D [K, Q], got shape {list(self.m.shape)}")
        if self.delta.dim() != 3:
            raise ValueError(
                f"SeedSamples: delta must be 3-D [K, N, Q] (or [K, G, Q]), got shape {list(self.delta.shape)}")
        K, Q = self.m.shape
        if self.delta.shape[0] != K or self.delta.shape[2] != Q:
            raise ValueError(
                f"SeedSamples: delta must have shape [K, N, Q] = [{K}, N, {Q}] with K, Q from m "
                f"{list(self.m.shape)}, got {list(self.delta.shape)}")
        for arg, t in (("m", self.m), ("delta", self.delta)):
            if not t.is_floating_point():
                raise ValueError(f"SeedSamples: {arg} must be a floating-point tensor, got {t.dtype}")
        if self.m.device != self.delta.device:
            raise ValueError(f"SeedSamples: m is on {self.m.device} but delta is on {self.delta.device}")
        self.seeds = [int(s) for s in self.seeds]
        if len(self.seeds) != K:
            raise ValueError(f"SeedSamples: seeds must list K = {K} seed ids (m has {K} rows), got {len(self.seeds)}")
        if len(set(self.seeds)) != K:
            raise ValueError(f"SeedSamples: seeds must be distinct, got {self.seeds}")
        self.names = [str(n) for n in self.names]
        if len(self.names) != Q:
            raise ValueError(
                f"SeedSamples: names must list Q = {Q} measurement names (m has {Q} columns), got {len(self.names)}")
        if len(set(self.names)) != Q:
            raise ValueError(f"SeedSamples: measurement names must be distinct, got {self.names}")
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"SeedSamples: method must be a non-empty string, got {self.method!r}")
        if self.groups is not None:
            self.groups = [[int(i) for i in g] for g in self.groups]
            if len(self.groups) != self.delta.shape[1]:
                raise ValueError(
                    f"SeedSamples: groups must list one group per row of delta (G = {self.delta.shape[1]}), "
                    f"got {len(self.groups)} groups")
        if not isinstance(self.meta, dict):
            raise TypeError(f"SeedSamples: meta must be a dict, got {type(self.meta).__name__}")

    # ---- sizes -------------------------------------------------------------------------------------

    @property
    def K(self) -> int:
        """Number of seeds."""
        return self.m.shape[0]

    @property
    def N(self) -> int:
        """Number of removal units: training examples, or groups when ``groups`` is set."""
        return self.delta.shape[1]

    @property
    def Q(self) -> int:
        """Number of measurements."""
        return self.m.shape[1]

    def __len__(self) -> int:
        """The number of removal units (examples or groups), N."""
        return self.N
