"""SeedSamples: per-seed measurements and removal effects, the hinge between estimators and statistics.

Every attribution method (unrolled differentiation, influence functions, masked retraining, ...)
produces a :class:`SeedSamples`; every distributional statistic and every evaluation consumes one.

Shapes: K seeds, N training examples (or G removal groups), Q measurements.

- ``m`` [K, Q]: the measurement of each seed's model trained on the full data (before removal).
- ``delta`` [K, N, Q]: removal effects ``δ_s(k) ≈ m(θ_s(D∖k)) − m(θ_s(D))`` (after − before),
  or [K, G, Q] per removal group when ``groups`` is set (``δ_s(G) = Σ_{k∈G} δ_s(k)``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from dtda.atomic import atomic_path

if TYPE_CHECKING:
    from dtda.stats import Distributional, Top

#: safetensors metadata key holding the JSON of everything but the tensors.
_META_KEY = "dtda.seed_samples"
_FORMAT = 1


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
                "SeedSamples: delta must be 3-D [K, N, Q] (or [K, G, Q]), "
                f"got shape {list(self.delta.shape)}")
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
            raise ValueError(
                f"SeedSamples: seeds must list K = {K} seed ids (m has {K} rows), got {len(self.seeds)}")
        if len(set(self.seeds)) != K:
            raise ValueError(f"SeedSamples: seeds must be distinct, got {self.seeds}")
        self.names = [str(n) for n in self.names]
        if len(self.names) != Q:
            raise ValueError(
                f"SeedSamples: names must list Q = {Q} measurement names (m has {Q} columns), "
                f"got {len(self.names)}")
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

    # ---- derived samples ---------------------------------------------------------------------------

    def group(self, groups: list[list[int]]) -> SeedSamples:
        """Removal effects of groups of examples: ``δ_s(G) = Σ_{k∈G} δ_s(k)`` (exact for derivatives).

        ``groups``: G lists of distinct example indices in [0, N). Returns SeedSamples with delta
        [K, G, Q] and ``groups`` set; everything else is kept.
        """
        if self.groups is not None:
            raise ValueError("SeedSamples.group: delta is already per group; group the per-example samples")
        groups = [[int(i) for i in g] for g in groups]
        for j, g in enumerate(groups):
            if len(set(g)) != len(g):
                raise ValueError(f"SeedSamples.group: group {j} repeats an example index: {g}")
            bad = [i for i in g if not 0 <= i < self.N]
            if bad:
                raise ValueError(f"SeedSamples.group: group {j} has indices outside [0, N={self.N}): {bad}")
        members = torch.tensor([i for g in groups for i in g], dtype=torch.long, device=self.delta.device)
        owner = torch.tensor([j for j, g in enumerate(groups) for _ in g], dtype=torch.long,
                             device=self.delta.device)
        delta = self.delta.new_zeros((self.K, len(groups), self.Q))
        delta.index_add_(1, owner, self.delta.index_select(1, members))
        return SeedSamples(self.m, delta, list(self.seeds), list(self.names), self.method, groups,
                           dict(self.meta))

    def subset(self, seeds: list[int]) -> SeedSamples:
        """The samples of the given seed ids, in the order given (at least one)."""
        seeds = [int(s) for s in seeds]
        missing = [s for s in seeds if s not in self.seeds]
        if missing or not seeds:
            raise ValueError(f"SeedSamples.subset: seeds must be a non-empty list of ids from {self.seeds}, "
                             f"got {seeds} (unknown: {missing})")
        rows = torch.tensor([self.seeds.index(s) for s in seeds], dtype=torch.long, device=self.m.device)
        return SeedSamples(self.m.index_select(0, rows), self.delta.index_select(0, rows), seeds,
                           list(self.names), self.method, self.groups, dict(self.meta))

    # ---- statistics --------------------------------------------------------------------------------

    def distributional(self, **options: Any) -> Distributional:
        """Every distributional statistic with bootstrap CIs; options of :func:`dtda.stats.distributional`."""
        from dtda.stats import (
            distributional,  # the statistics layer sits above this container
        )

        return distributional(self, **options)

    def top(self, k: int, by: str = "w2", query: int | str | None = None, largest: bool = True,
            **options: Any) -> Top:
        """The k examples (or groups) ranked by statistic ``by`` for ``query``.

        ``query=None`` ranks by the statistic averaged over all queries. ``by`` is any statistic
        name ("w2", "mean", "var_increase", "var_increase_first_order", "shape_w2",
        "w2_smoothed", "sign_agreement", "z", ...), ``abs_<name>``, or ``quantile_<p>`` (computed
        at level p on demand). No bootstrap is run; ``options`` go to :func:`dtda.stats.distributional`.
        Returns :class:`dtda.stats.Top` (indices, values, by, query).
        """
        from dtda.stats import QUANTILE_PREFIX

        base = by.removeprefix("abs_")
        if base.startswith(QUANTILE_PREFIX) and "quantiles" not in options:
            try:
                options["quantiles"] = (float(base[len(QUANTILE_PREFIX):]),)
            except ValueError:
                raise ValueError(f"SeedSamples.top: cannot read a quantile level from by={by!r}; "
                                 f"expected e.g. 'quantile_0.9'") from None
        options.setdefault("bootstrap", 0)
        return self.distributional(**options).top(k, by=by, query=query, largest=largest)

    # ---- persistence -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file: tensors ``m`` and ``delta``, the rest as JSON metadata.

        The write is atomic (a temporary file in the same folder, then ``os.replace``). Returns the path.
        """
        path = Path(path)
        info = {"format": _FORMAT, "seeds": self.seeds, "names": self.names, "method": self.method,
                "groups": self.groups, "meta": self.meta}
        try:
            text = json.dumps(info, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"SeedSamples.save: meta must be JSON-serialisable (no NaN), got {self.meta!r}: {err}") from err
        tensors = {"m": self.m.detach().cpu().contiguous(), "delta": self.delta.detach().cpu().contiguous()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={_META_KEY: text})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> SeedSamples:
        """Read a file written by :meth:`save` (safetensors and JSON only: nothing is unpickled)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SeedSamples.load: no such file {str(path)!r}")
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            if _META_KEY not in metadata or set(f.keys()) != {"m", "delta"}:
                raise ValueError(f"SeedSamples.load: {str(path)!r} is not a SeedSamples file "
                                 f"(expected tensors m, delta and metadata key {_META_KEY!r})")
            m, delta = f.get_tensor("m"), f.get_tensor("delta")
        info = json.loads(metadata[_META_KEY])
        if info.get("format") != _FORMAT:
            raise ValueError(f"SeedSamples.load: {str(path)!r} has format {info.get('format')!r}, "
                             f"this dtda reads format {_FORMAT}")
        return cls(m, delta, info["seeds"], info["names"], info["method"], info["groups"], info["meta"])
