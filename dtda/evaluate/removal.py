"""What a coupled retraining changes: a set of training examples and the weight they get.

A :class:`Removal` names example indices G and the weight w they train with (0: removed, the
default; 1 − ε: a tiny weight change, for null controls). Its ``key`` is a stable text hash that
names the retraining in the cache.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Removal:
    """Examples ``indices`` (sorted, distinct) retrained with weight ``weight`` (0 = removed)."""

    indices: tuple[int, ...]
    weight: float = 0.0

    @classmethod
    def of(cls, indices, n: int, weight: float = 0.0) -> "Removal":
        """Checked constructor: ``indices`` distinct ints in [0, n); ``weight`` finite, < 1."""
        try:
            ids = sorted(int(i) for i in indices)
        except TypeError:
            raise TypeError(f"removal: indices must be a list of example indices, got {indices!r}") from None
        if len(set(ids)) != len(ids):
            raise ValueError(f"removal: indices must be distinct, got {ids}")
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise ValueError(f"removal: indices must be in [0, N={n}), got {bad}")
        weight = float(weight)
        if not weight < 1.0 or weight != weight:
            raise ValueError(f"removal: weight must be below 1 (0 removes; 1 − ε is a tiny change), got {weight}")
        return cls(tuple(ids), weight)

    @property
    def key(self) -> str:
        """A stable name: 16 hex digits of a hash of the indices and the weight."""
        text = f"{self.weight!r}:" + ",".join(map(str, self.indices))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.indices)
