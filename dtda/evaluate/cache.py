"""A resumable on-disk cache of retrained measurements.

Layout under the cache folder (inside a run directory: ``<run>/retrain/``)::

    context.json                       what the cache was made for (recipe, data, measurement hash)
    <mode>/group<size>/<removal key>/<seed>.safetensors    m [Q] of seed ``seed`` retrained without
                                       the removal, in lockstep groups of <size> seeds

Each file is written to a temporary name and renamed into place, so a file that exists is complete
and a killed retraining resumes where it stopped. A cache made for another recipe, dataset or
measurement is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor

from dtda.atomic import atomic_path, atomic_write_text
from dtda.evaluate.removal import Removal


class CacheMismatch(RuntimeError):
    """The cache folder holds retrainings of another recipe, dataset or measurement."""


class RetrainCache:
    """Retrained measurements m [Q] keyed by (mode, removal, seed, group size), in folder ``path``
    (a member's bits depend on whether it trained alone or in a lockstep group).

    ``context`` (a hex digest of the recipe, data and measurement) is written on first use and
    checked on every later open.
    """

    CONTEXT = "context.json"

    def __init__(self, path: str | os.PathLike, context: str):
        self.path = Path(path)
        self.context = context
        found = self.path / self.CONTEXT
        if found.is_file():
            stored = json.loads(found.read_text()).get("context")
            if stored != context:
                raise CacheMismatch(
                    f"retrain cache {self.path} was made for another recipe, dataset or measurement "
                    f"(context {str(stored)[:12]}…, this one {context[:12]}…); use another folder or delete it")
        else:
            atomic_write_text(found, json.dumps({"context": context}) + "\n")

    def file(self, mode: str, removal: Removal, seed: int, group_size: int) -> Path:
        return self.path / mode / f"group{int(group_size)}" / removal.key / f"{int(seed)}.safetensors"

    def get(self, mode: str, removal: Removal, seed: int, group_size: int) -> Tensor | None:
        """The stored m [Q], or None."""
        f = self.file(mode, removal, seed, group_size)
        return load_file(str(f))["m"] if f.is_file() else None

    def put(self, mode: str, removal: Removal, seed: int, m: Tensor, group_size: int) -> None:
        f = self.file(mode, removal, seed, group_size)
        meta = {"dtda": json.dumps({"mode": mode, "indices": list(removal.indices), "weight": removal.weight,
                                    "seed": int(seed), "group_size": int(group_size)}, sort_keys=True)}
        tensors = {"m": m.detach().cpu().contiguous()}
        with atomic_path(f) as tmp:
            save_file(tensors, str(tmp), metadata=meta)


def context_digest(recipe, data, measure_probe: Tensor) -> str:
    """A hash of the recipe's description, the training data and ``measure_probe`` (the
    measurement on a fixed model: it tells measurements apart without hashing their code)."""
    h = hashlib.sha256(json.dumps(recipe.describe(), sort_keys=True).encode())
    for t in (data.X, data.y, measure_probe):
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


__all__ = ["RetrainCache", "CacheMismatch", "context_digest"]
