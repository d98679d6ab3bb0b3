"""Seeded ensembles: training, resuming from a store, and coupled retraining."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from dtda.train.data import Data, as_data
from dtda.train.lockstep import default_group_size, groups_of, train_group
from dtda.train.member import Member, Record, load_trained
from dtda.train.recipe import Recipe
from dtda.train.seeds import check_seeds


class Ensemble:
    """K members trained with one recipe on one dataset (one seed each).

    ``len(ens)``, ``ens.seeds``, ``ens.model(i)`` (member i's trained module, eval mode),
    ``ens.record(i)`` (its trajectory) and ``ens.member(i)``.
    """

    def __init__(self, recipe: Recipe, data: Data, members: list[Member]):
        self.recipe, self.data, self.members = recipe, data, list(members)

    def __len__(self) -> int:
        return len(self.members)

    @property
    def seeds(self) -> list[int]:
        return [m.seed for m in self.members]

    def member(self, i: int) -> Member:
        return self.members[i]

    def model(self, i: int) -> nn.Module:
        return load_trained(self.recipe, self.members[i])

    def record(self, i: int) -> Record:
        return self.members[i].record

    def __repr__(self) -> str:
        return f"Ensemble(K={len(self)}, N={len(self.data)}, seeds={self.seeds})"


def _in_groups(recipe: Recipe, data: Data, seeds, store, weights, group_size: int | None) -> list[Member]:
    """Members ``seeds`` trained in consecutive groups of ``group_size`` (None: :func:`default_group_size`)."""
    ids = check_seeds(seeds)
    if group_size is None:
        group_size = default_group_size(sum(p.numel() for p in recipe.build(ids[0]).parameters()), len(ids))
    elif isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int (seeds trained in lockstep) or None, got {group_size!r}")
    return [m for g in groups_of(ids, group_size) for m in train_group(recipe, data, g, store, weights)]


def train_ensemble(recipe: Recipe, train, seeds, store: str | Path | None = None,
                   group_size: int | None = None) -> Ensemble:
    """Train one member per seed (``seeds``: an int K for 0..K−1, or a list of ids).

    Consecutive ``group_size`` seeds train in lockstep as one batched computation
    (:func:`dtda.train.train_group`; None: :func:`dtda.train.lockstep.default_group_size`).
    With ``store`` (a directory), members stored there for the same recipe and data are loaded
    instead of retrained, and new ones are saved, so an interrupted run resumes.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a dtda.Recipe, got {type(recipe).__name__}")
    data = as_data(train, recipe.dtype, recipe.loss_name)
    return Ensemble(recipe, data, _in_groups(recipe, data, seeds, store, None, group_size))


def retrain(recipe: Recipe, train, seeds, weights: Tensor | None = None,
            remove=None, group_size: int | None = None) -> Ensemble:
    """Retrain with the same seed streams (coupled samples) and changed per-example weights.

    Masked removal (PAPER §1, §8.1): the initialisation, batch sequence and dropout draws are those
    of the full-data run; a removed example keeps its place in every batch with weight 0, and the
    normaliser |B_t| is unchanged. ``weights`` [N] may be fractional (e.g. 1 ± h for finite
    differences); ``remove`` (indices) sets those weights to 0 (on top of ``weights`` if given).
    ``group_size``: as in :func:`train_ensemble`.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a dtda.Recipe, got {type(recipe).__name__}")
    data = as_data(train, recipe.dtype, recipe.loss_name)
    n = len(data)
    w = torch.ones(n, dtype=recipe.dtype) if weights is None else torch.as_tensor(weights).to(recipe.dtype).clone()
    if remove is not None:
        idx = torch.as_tensor(list(remove) if not isinstance(remove, Tensor) else remove, dtype=torch.long)
        if idx.numel() and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"remove: indices must be in [0, {n}), got {idx.tolist()}")
        w[idx] = 0.0
    return Ensemble(recipe, data, _in_groups(recipe, data, seeds, None, w, group_size))
