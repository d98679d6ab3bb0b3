"""A member's trajectory record and its one file format.

:class:`Record` (batch indices, checkpoints, training weights) and :class:`Member` (a seed and its
record) live here with their serialisation, so the format has one home. On disk: one safetensors
file per member, written atomically, loaded without pickle.

Layout: ``<store>/members/<seed>/member.safetensors`` holding the batch indices (flat, with
sizes), the training weights (if any) and the checkpoints ``ckpt.<t>.params.<name>`` and
``ckpt.<t>.<slot>.<name>``; the metadata holds the seed, T, C, the fingerprint and, for a member
trained in a group, the group's seeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from dtda.atomic import atomic_path
from dtda.train.optim import Params, State


@dataclass
class Record:
    """A member's trajectory.

    batches: T tensors of example indices (B_t, a multiset under iid batching).
    checkpoints: step t -> state s_t = (params, optimiser state) *before* step t, for
        t = 0, C, 2C, ... and t = T (the trained model).
    weights: the per-example training weights [N] (None: all ones).
    every: the checkpoint spacing C.
    group: the seeds trained with it in lockstep, in slot order (:mod:`dtda.train.lockstep`), or
        None when it was trained alone; a replay recomputes its steps the same way.
    """

    batches: list[Tensor]
    checkpoints: dict[int, tuple[Params, State]]
    weights: Tensor | None
    every: int
    group: tuple[int, ...] | None = None

    @property
    def steps(self) -> int:
        return len(self.batches)


@dataclass
class Member:
    """Ensemble member ``seed`` and its :class:`Record`."""

    seed: int
    record: Record

    @property
    def params(self) -> Params:
        """θ_T, the trained parameters."""
        return self.record.checkpoints[self.record.steps][0]

    def weights(self, n: int, dtype: torch.dtype) -> Tensor:
        w = self.record.weights
        return torch.ones(n, dtype=dtype) if w is None else w.to(dtype)


FORMAT = "dtda-member-1"


def member_path(store: str | Path, seed: int) -> Path:
    return Path(store) / "members" / str(seed) / "member.safetensors"


def save_member(store: str | Path, member: Member, fingerprint: str) -> Path:
    """Write ``member`` under ``store`` (temp file + ``os.replace``)."""
    path = member_path(store, member.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = member.record
    tensors = {"batches.index": torch.cat(rec.batches),
               "batches.size": torch.tensor([len(b) for b in rec.batches], dtype=torch.int64)}
    if rec.weights is not None:
        tensors["weights"] = rec.weights
    for t, (params, state) in rec.checkpoints.items():
        for k, p in params.items():
            tensors[f"ckpt.{t}.params.{k}"] = p
        for slot, values in state.items():
            for k, v in values.items():
                tensors[f"ckpt.{t}.{slot}.{k}"] = v
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    # One JSON key: safetensors orders several metadata keys differently per process, and
    # member files should be byte-identical across reruns.
    fields = {"format": FORMAT, "seed": member.seed, "steps": rec.steps, "every": rec.every,
              "fingerprint": fingerprint}
    if rec.group is not None:
        fields["group"] = list(rec.group)
    meta = {"dtda": json.dumps(fields, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_member(store: str | Path, seed: int, fingerprint: str) -> Member | None:
    """The stored member ``seed``, or None if absent. Refuses one stored for another fingerprint."""
    from safetensors import safe_open

    path = member_path(store, seed)
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("dtda", "{}"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a dtda member file (format {meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("fingerprint") != fingerprint:
        raise ValueError(f"{path}: stored for another recipe, data or weights (fingerprint "
                         f"{meta.get('fingerprint', '?')[:12]}…, expected {fingerprint[:12]}…); "
                         "use another store directory")
    tensors = load_file(str(path))
    batches = list(tensors.pop("batches.index").split(tensors.pop("batches.size").tolist()))
    weights = tensors.pop("weights", None)
    checkpoints: dict[int, tuple[dict, dict]] = {}
    for key, value in tensors.items():
        _, t, slot, name = key.split(".", 3)
        params, state = checkpoints.setdefault(int(t), ({}, {}))
        if slot == "params":
            params[name] = value
        else:
            state.setdefault(slot, {})[name] = value
    group = tuple(meta["group"]) if "group" in meta else None
    return Member(seed, Record(batches, checkpoints, weights, int(meta["every"]), group))
