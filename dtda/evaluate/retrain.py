"""Coupled retraining (PAPER §8.1): the ground truth every evaluation compares predictions with.

Seed s is reused for the full-data run and every retrain. Two modes:

- ``masked``: the same θ_0, batch indices and dropout draws; the examples of G train with weight
  w_G (0 for removal) and |B_t| is unchanged. UD's exact target (fixed-seed TDA).
- ``subset``: from scratch on D∖G with the same seed streams: θ_0 is identical, the batches
  differ (drawn for N − |G| examples). Samples μ_{D∖G}: the target of d-TDA and LDS.

The unit of work is one (removal, seed) training; :func:`retrain_measurements` spreads the missing
ones over an executor (:mod:`dtda.train.executors`, local by default) and stores each in a
:class:`~dtda.evaluate.cache.RetrainCache` as it arrives, so a killed evaluation resumes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dtda.evaluate.cache import RetrainCache, context_digest
from dtda.evaluate.removal import Removal
from dtda.measure import Measurement, as_measurement
from dtda.samples import SeedSamples
from dtda.train.data import Data, as_data
from dtda.train.executors import LocalExecutor
from dtda.train.ensemble import retrain, train_ensemble
from dtda.train.recipe import Recipe
from dtda.train.seeds import check_seeds

MODES = ("masked", "subset")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} ('masked': same batches, removed examples weighted 0; "
                         f"'subset': from scratch on D∖G), got {mode!r}")
    return mode


def measure_retrained(recipe: Recipe, data: Data, measure: Measurement, mode: str, removal: Removal,
                      seed: int) -> Tensor:
    """m [Q] of member ``seed`` trained without ``removal`` (``mode``: masked or subset)."""
    n = len(data)
    if mode == "masked" or not removal.indices:
        weights = torch.ones(n, dtype=recipe.dtype)
        weights[list(removal.indices)] = removal.weight
        ensemble = retrain(recipe, data, [seed], weights=weights)
    else:
        if removal.weight != 0.0:
            raise ValueError(f"mode 'subset' removes examples (weight 0); weight {removal.weight} needs mode 'masked'")
        keep = torch.ones(n, dtype=torch.bool)
        keep[list(removal.indices)] = False
        ensemble = train_ensemble(recipe, Data(data.X[keep], data.y[keep]), [seed])
    with torch.no_grad():
        return measure(ensemble.model(0)).detach().cpu()


@dataclass
class RetrainJob:
    """Picklable work list: task i retrains ``tasks[i]`` = (removal, seed) and returns m [Q].

    Executors call jobs with an integer id (they name it a seed); here it indexes ``tasks``.
    """

    recipe: Recipe
    data: Data
    measure: Measurement
    mode: str
    tasks: list[tuple[Removal, int]]

    def __call__(self, task: int) -> Tensor:
        removal, seed = self.tasks[task]
        return measure_retrained(self.recipe, self.data, self.measure, self.mode, removal, seed)


def open_cache(cache, recipe: Recipe, data: Data, measure: Measurement) -> RetrainCache | None:
    """``cache`` as a :class:`RetrainCache` (a folder path is opened for this recipe, data and
    measurement; None stays None)."""
    if cache is None or isinstance(cache, RetrainCache):
        return cache
    if not isinstance(cache, (str, os.PathLike)):
        raise TypeError(f"cache must be None, a folder path or a RetrainCache, got {type(cache).__name__}")
    with torch.no_grad():
        probe = measure(recipe.build(0)).detach()
    return RetrainCache(Path(cache), context_digest(recipe, data, probe))


def as_removals(removals, n: int) -> list[Removal]:
    """A list of :class:`Removal` (lists of indices are removals with weight 0)."""
    if isinstance(removals, Removal):
        raise TypeError("removals must be a list of removals, not one Removal; wrap it in a list")
    return [r if isinstance(r, Removal) else Removal.of(r, n) for r in removals]


def retrain_measurements(recipe: Recipe, train, measure, removals, seeds, mode: str = "masked", *,
                         cache=None, executor=None, progress: bool = False) -> Tensor:
    """m [R, K, Q]: the measurements of every seed retrained without every removal.

    removals: R removals (:class:`Removal`, or lists of example indices to remove); seeds: K seed
    ids (an int K means 0..K−1); mode: "masked" or "subset" (an empty removal is the full-data run
    in both). cache: a folder (or :class:`RetrainCache`) of finished retrainings: those are read,
    the others are trained on ``executor`` (default: in this process) and stored as they arrive.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a dtda.Recipe, got {type(recipe).__name__}")
    check_mode(mode)
    data = as_data(train, recipe.dtype, recipe.loss_name)
    measure = as_measurement(measure)
    removals = as_removals(removals, len(data))
    if not removals:
        raise ValueError("removals must not be empty")
    if mode == "subset" and any(r.weight != 0.0 for r in removals):
        raise ValueError("mode 'subset' removes examples; removals with weight ≠ 0 need mode 'masked'")
    seeds = check_seeds(seeds)
    cache = open_cache(cache, recipe, data, measure)

    def slot(removal: Removal) -> str:  # the full-data run is the same in both modes
        return "masked" if not removal.indices else mode

    results: dict[tuple[int, int], Tensor] = {}
    tasks: list[tuple[int, int]] = []
    for r, removal in enumerate(removals):
        for k, seed in enumerate(seeds):
            got = cache.get(slot(removal), removal, seed) if cache is not None else None
            if got is None:
                tasks.append((r, k))
            else:
                results[r, k] = got
    if tasks:
        job = RetrainJob(recipe, data, measure, mode, [(removals[r], seeds[k]) for r, k in tasks])
        bar = _bar(len(tasks), f"retrain ({mode})", progress)

        def store(task: int, m: Tensor) -> None:
            r, k = tasks[task]
            if cache is not None:
                cache.put(slot(removals[r]), removals[r], seeds[k], m)
            results[r, k] = m
            bar.update(1)

        try:
            (executor or LocalExecutor()).run(job, list(range(len(tasks))), store)
        finally:
            bar.close()
    return torch.stack([torch.stack([results[r, k] for k in range(len(seeds))]) for r in range(len(removals))])


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="run", disable=not enabled, file=sys.stderr)


def baseline(samples: SeedSamples, recipe: Recipe, train, measure, seeds, *, cache=None, executor=None,
             progress: bool = False) -> Tensor:
    """Full-data measurements m [K, Q] for ``seeds``: from ``samples`` where it has the seed,
    trained (and cached) for the others."""
    seeds = check_seeds(seeds)
    missing = [s for s in seeds if s not in samples.seeds]
    trained = {}
    if missing:
        got = retrain_measurements(recipe, train, measure, [Removal(())], missing, "masked", cache=cache,
                                   executor=executor, progress=progress)[0]
        trained = dict(zip(missing, got))
    rows = [samples.m[samples.seeds.index(s)] if s in samples.seeds else trained[s].to(samples.m.dtype)
            for s in seeds]
    return torch.stack(rows)


def retrained_samples(samples: SeedSamples, recipe: Recipe, train, measure, removals, seeds=None,
                      mode: str = "masked", *, cache=None, executor=None, progress: bool = False) -> SeedSamples:
    """The *actual* effects as :class:`SeedSamples`: m [K, Q] full-data measurements and
    δ [K, R, Q] = m(retrained without removal r) − m, for ``seeds`` (default: the samples' seeds).

    Every statistic of :mod:`dtda.stats` then applies to the ground truth as to a prediction
    (X = {m_s}, Y = {m_s + δ_s} = the retrained measurements). ``groups`` lists the removals'
    indices; method is "retrain-<mode>".
    """
    seeds = list(samples.seeds) if seeds is None else check_seeds(seeds)
    data = as_data(train, recipe.dtype, recipe.loss_name)
    measure = as_measurement(measure)
    removals = as_removals(removals, len(data))
    cache = open_cache(cache, recipe, data, measure)
    m = baseline(samples, recipe, data, measure, seeds, cache=cache, executor=executor, progress=progress)
    after = retrain_measurements(recipe, data, measure, removals, seeds, mode, cache=cache, executor=executor,
                                 progress=progress).to(m.dtype)
    if after.shape[-1] != m.shape[-1]:
        raise ValueError(f"the measurement gives Q = {after.shape[-1]} values but samples has Q = {m.shape[-1]}; "
                         "pass the measurement the samples were attributed with")
    delta = (after - m.unsqueeze(0)).permute(1, 0, 2).contiguous()
    return SeedSamples(m, delta, seeds, list(samples.names), f"retrain-{mode}",
                       groups=[list(r.indices) for r in removals],
                       meta={"mode": mode, "weights": [r.weight for r in removals]})


__all__ = ["MODES", "RetrainJob", "retrain_measurements", "retrained_samples", "baseline", "measure_retrained"]
