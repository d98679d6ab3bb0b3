"""Coupled retraining (PAPER §8.1): the ground truth every evaluation compares predictions with.

Seed s is reused for the full-data run and every retrain. Two modes:

- ``masked``: the same θ_0, batch indices and dropout draws; the examples of G train with weight
  w_G (0 for removal) and |B_t| is unchanged. UD's exact target (fixed-seed TDA).
- ``subset``: from scratch on D∖G with the same seed streams: θ_0 is identical, the batches
  differ (drawn for N − |G| examples). Samples μ_{D∖G}: the target of d-TDA and LDS.

The unit of work is one removal's training of a group of seeds in lockstep
(:func:`dtda.train.train_group`: a small model's K members cost little more than one);
:func:`retrain_measurements` spreads the groups with missing seeds over an executor
(:mod:`dtda.train.executors`, local by default) and stores each seed's measurement in a
:class:`~dtda.evaluate.cache.RetrainCache` as it arrives, so a killed evaluation resumes.

A member's bits depend on how it was trained: alone or in a lockstep group (the batched path
sums in another order). Retraining with the group size the attributed run used (a run's
``execution.seeds_per_group``) therefore reproduces its members bit for bit for an empty removal,
so no rounding difference, amplified by chaotic training, leaks into the "actual" effects. The
cache keys every measurement by group size.
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
from dtda.train.lockstep import default_group_size, groups_of, train_group
from dtda.train.member import load_trained
from dtda.train.recipe import Recipe
from dtda.train.seeds import check_seeds

MODES = ("masked", "subset")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} ('masked': same batches, removed examples weighted 0; "
                         f"'subset': from scratch on D∖G), got {mode!r}")
    return mode


def measure_retrained(recipe: Recipe, data: Data, measure: Measurement, mode: str, removal: Removal,
                      seeds: tuple[int, ...]) -> list[Tensor]:
    """m [Q] of each of ``seeds`` trained in lockstep as one group without ``removal`` (``mode``:
    masked or subset)."""
    n = len(data)
    if mode == "masked" or not removal.indices:
        weights = torch.ones(n, dtype=recipe.dtype)
        weights[list(removal.indices)] = removal.weight
        members = train_group(recipe, data, list(seeds), weights=weights)
    else:
        if removal.weight != 0.0:
            raise ValueError(f"mode 'subset' removes examples (weight 0); weight {removal.weight} needs mode 'masked'")
        keep = torch.ones(n, dtype=torch.bool)
        keep[list(removal.indices)] = False
        members = train_group(recipe, Data(data.X[keep], data.y[keep]), list(seeds))
    with torch.no_grad():
        return [measure(load_trained(recipe, member)).detach().cpu() for member in members]


@dataclass
class RetrainJob:
    """Picklable work list: task i trains the group ``tasks[i]`` = (removal, seeds) and returns
    its measurements, a list of m [Q] in the order of the seeds.

    Executors call jobs with an integer id (they name it a seed); here it indexes ``tasks``.
    """

    recipe: Recipe
    data: Data
    measure: Measurement
    mode: str
    tasks: list[tuple[Removal, tuple[int, ...]]]

    def __call__(self, task: int) -> list[Tensor]:
        removal, seeds = self.tasks[task]
        return measure_retrained(self.recipe, self.data, self.measure, self.mode, removal, seeds)


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


def resolve_group_size(recipe: Recipe, n_seeds: int, group_size: int | None) -> int:
    """Seeds per lockstep group: ``group_size`` checked, or (None) the size
    :func:`dtda.train.train_ensemble` uses by default for ``n_seeds`` seeds."""
    if group_size is None:
        n_params = sum(p.numel() for p in recipe.build(0).parameters())
        return default_group_size(n_params, n_seeds)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int (seeds retrained in lockstep; a run's "
                         f"execution.seeds_per_group) or None, got {group_size!r}")
    return group_size


def retrain_measurements(recipe: Recipe, train, measure, removals, seeds, mode: str = "masked", *,
                         group_size: int | None = None, cache=None, executor=None,
                         progress: bool = False) -> Tensor:
    """m [R, K, Q]: the measurements of every seed retrained without every removal.

    removals: R removals (:class:`Removal`, or lists of example indices to remove); seeds: K seed
    ids (an int K means 0..K−1); mode: "masked" or "subset" (an empty removal is the full-data run
    in both). group_size: consecutive seeds of ``seeds`` retrained in lockstep (pass the attributed
    run's, e.g. ``execution.seeds_per_group``, to reproduce its members' bits; None: the default of
    :func:`dtda.train.train_ensemble` for K seeds). cache: a folder (or :class:`RetrainCache`) of
    finished retrainings: those are read, the groups with missing seeds are trained whole on
    ``executor`` (default: in this process) and stored as they arrive.
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
    size = resolve_group_size(recipe, len(seeds), group_size)
    cache = open_cache(cache, recipe, data, measure)

    def slot(removal: Removal) -> str:  # the full-data run is the same in both modes
        return "masked" if not removal.indices else mode

    results: dict[tuple[int, int], Tensor] = {}
    tasks: list[tuple[int, tuple[int, ...]]] = []  # (removal, seeds of one group)
    for r, removal in enumerate(removals):
        for group in groups_of(seeds, size):
            for seed in group:
                got = cache.get(slot(removal), removal, seed, size) if cache is not None else None
                if got is None:
                    break
                results[r, seed] = got
            else:
                continue
            tasks.append((r, group))  # a group is trained whole: its cached members come out the same
    if tasks:
        job = RetrainJob(recipe, data, measure, mode, [(removals[r], group) for r, group in tasks])
        bar = _bar(sum(len(g) for _, g in tasks), f"retrain ({mode})", progress)

        def store(task: int, ms: list[Tensor]) -> None:
            r, group = tasks[task]
            for seed, m in zip(group, ms):
                if cache is not None and (r, seed) not in results:
                    cache.put(slot(removals[r]), removals[r], seed, m, size)
                results[r, seed] = m
            bar.update(len(group))

        try:
            (executor or LocalExecutor()).run(job, list(range(len(tasks))), store)
        finally:
            bar.close()
    return torch.stack([torch.stack([results[r, s] for s in seeds]) for r in range(len(removals))])


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="run", disable=not enabled, file=sys.stderr)


def coupled_seeds(samples: SeedSamples, seeds=None) -> list[int]:
    """Retrain seeds: None gives the samples' seeds; an int S the first S of them, continued with
    new ids above the largest when S > K; a list is taken as given."""
    if seeds is None:
        return list(samples.seeds)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive number of retrain seeds, got {seeds}")
        start = max(samples.seeds) + 1
        return (list(samples.seeds) + list(range(start, start + max(0, seeds - samples.K))))[:seeds]
    return check_seeds(seeds)


def baseline(samples: SeedSamples, recipe: Recipe, train, measure, seeds, *, group_size: int | None = None,
             cache=None, executor=None, progress: bool = False) -> Tensor:
    """Full-data measurements m [K, Q] for ``seeds``: from ``samples`` where it has the seed,
    trained (and cached) for the others (in lockstep groups of ``group_size``)."""
    seeds = check_seeds(seeds)
    missing = [s for s in seeds if s not in samples.seeds]
    trained = {}
    if missing:
        got = retrain_measurements(recipe, train, measure, [Removal(())], missing, "masked",
                                   group_size=group_size, cache=cache, executor=executor, progress=progress)[0]
        trained = dict(zip(missing, got))
    rows = [samples.m[samples.seeds.index(s)] if s in samples.seeds else trained[s].to(samples.m.dtype)
            for s in seeds]
    return torch.stack(rows)


def retrained_samples(samples: SeedSamples, recipe: Recipe, train, measure, removals, seeds=None,
                      mode: str = "masked", *, group_size: int | None = None, cache=None, executor=None,
                      progress: bool = False) -> SeedSamples:
    """The *actual* effects as :class:`SeedSamples`: m [K, Q] full-data measurements and
    δ [K, R, Q] = m(retrained without removal r) − m, for ``seeds`` (default: the samples' seeds).

    Every statistic of :mod:`dtda.stats` then applies to the ground truth as to a prediction
    (X = {m_s}, Y = {m_s + δ_s} = the retrained measurements). ``groups`` lists the removals'
    indices; method is "retrain-<mode>". group_size: as in :func:`retrain_measurements` (None: the
    default for the samples' K seeds, which is how :func:`dtda.train.train_ensemble` trains them).
    """
    seeds = coupled_seeds(samples, seeds)
    group_size = resolve_group_size(recipe, samples.K, group_size)
    data = as_data(train, recipe.dtype, recipe.loss_name)
    measure = as_measurement(measure)
    removals = as_removals(removals, len(data))
    cache = open_cache(cache, recipe, data, measure)
    run = dict(group_size=group_size, cache=cache, executor=executor, progress=progress)
    m = baseline(samples, recipe, data, measure, seeds, **run)
    after = retrain_measurements(recipe, data, measure, removals, seeds, mode, **run).to(m.dtype)
    if after.shape[-1] != m.shape[-1]:
        raise ValueError(f"the measurement gives Q = {after.shape[-1]} values but samples has Q = {m.shape[-1]}; "
                         "pass the measurement the samples were attributed with")
    delta = (after - m.unsqueeze(0)).permute(1, 0, 2).contiguous()
    return SeedSamples(m, delta, seeds, list(samples.names), f"retrain-{mode}",
                       groups=[list(r.indices) for r in removals],
                       meta={"mode": mode, "weights": [r.weight for r in removals]})


__all__ = ["MODES", "RetrainJob", "coupled_seeds", "resolve_group_size", "retrain_measurements", "retrained_samples", "baseline", "measure_retrained"]
