"""The staged job behind ``dtda run``: train → attribute → statistics → report, resumable.

Stages and what marks them finished (every output is written atomically and then recorded with its
sha256 in the run's manifest; a rerun skips a file that verifies, and recomputes one that does not
from what it was derived from, see ``docs/reliability.md``):

1. **train**: per seed, ``members/<seed>/member.safetensors`` (written by :func:`dtda.train.train_member`).
2. **attribute**: per seed, ``shards/<seed>.safetensors`` with m [Q] and δ [N, Q]; then the
   reduction ``samples.safetensors`` (:meth:`SeedSamples.save`: m [K, Q], δ [K, N, Q], seeds in increasing order).
3. **statistics**: ``statistics.safetensors`` (every statistic [N, Q] and its CI [2, N, Q]) and
   ``summary.json``.
4. **report**: ``report/`` (``index.html``, ``report.md``, PNG plots).

Each stage first brings its inputs up to date (``report`` runs ``statistics``, which runs
``attribute``), so a corrupt or missing input is recomputed before it is read.

A group of seeds (``execution.seeds_per_group`` consecutive seeds of the run) is the unit of
parallel work: one task trains its members in lockstep (or loads them) and unrolls them together,
on the configured executor, and the driver stores each result as it arrives. A rerun skips the
groups whose results are all stored and recomputes the others whole (deterministically, so what
was stored comes out the same). A seed whose training
hits a non-finite loss is recorded in ``failures.json`` with the error (seed, step, examples);
with ``execution.on_failure = "continue"`` the run goes on with the other seeds (at least two
must remain), with ``"stop"`` it ends with that error. Failed seeds are deterministic, so a rerun
skips them rather than failing again.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dtda import config as cfgmod
from dtda import sources
from dtda import models
from dtda.samples import SeedSamples
from dtda.rundir import RunDir, atomic_path

STAGES = ("train", "attribute", "statistics", "report")


class RunError(RuntimeError):
    """A run cannot go on (too few seeds left, a stage's input missing, ...)."""


# ---- resolving a configuration -------------------------------------------------------------------

def resolve(config: dict) -> tuple[dict, sources.TaskData]:
    """Load the data and fill every ``auto`` value; returns (fully resolved config, data)."""
    config = json.loads(json.dumps(config))  # a deep copy of plain values
    dtype = getattr(torch, config["train"]["dtype"])
    data = sources.load(config["data"], dtype)
    classification = data.task == "classification"
    config["data"]["task"] = data.task
    if config["model"]["name"] == "auto":
        config["model"]["name"] = "data" if data.model_factory is not None else "mlp:64,64"
    if config["train"]["loss"] == "auto":
        config["train"]["loss"] = "cross_entropy" if classification else "mse"
    if config["measure"]["kind"] == "auto":
        config["measure"]["kind"] = "margin" if classification else "output"
    problems = []
    if config["model"]["name"] == "data" and data.model_factory is None:
        problems.append(f"model.name: 'data' needs module:function data that returns a model factory, "
                        f"but data.source is {config['data']['source']!r}")
    if config["measure"]["kind"] == "margin" and not classification:
        problems.append("measure.kind: 'margin' needs classification data; use 'output' or 'loss'")
    if config["train"]["loss"] == "cross_entropy" and not classification:
        problems.append("train.loss: 'cross_entropy' needs classification data; use 'mse'")
    test = config["measure"]["test"]
    n_test = len(data.X_test)
    if isinstance(test, int) and test > n_test:
        problems.append(f"measure.test: asks for the first {test} test examples but the test set has {n_test}")
    if isinstance(test, list) and max(test) >= n_test:
        problems.append(f"measure.test: index {max(test)} is out of range for {n_test} test examples")
    if problems:
        raise cfgmod.ConfigError(problems)
    if config["execution"]["seeds_per_group"] == 0:
        config["execution"]["seeds_per_group"] = _default_group_size(config, data)
    return config, data


def _default_group_size(config: dict, data: sources.TaskData) -> int:
    """The group size a run fixes when it is created: a member's bits depend on the size of the
    lockstep group it trained in, so the size is resolved once, stored and fingerprinted, and never
    depends on the executor that happens to run the groups."""
    from dtda.train.lockstep import default_group_size

    n_params = sum(p.numel() for p in Plan.build(config, data).recipe.build(0).parameters())
    return default_group_size(n_params, len(cfgmod.seed_list(config)), config["execution"]["workers"])


@dataclass
class Plan:
    """What one seed's work needs, rebuilt from the resolved config in every worker."""

    config: dict
    data: sources.TaskData
    recipe: object
    test_index: list[int]
    names: list[str]

    @classmethod
    def build(cls, config: dict, data: sources.TaskData | None = None) -> "Plan":
        from dtda.train import SGD, AdamW, Recipe

        if data is None:
            config, data = resolve(config)
        t = config["train"]
        mname = config["model"]["name"]
        factory = data.model_factory if mname == "data" else (
            cfgmod.import_callable(mname) if ":" in mname and not mname.startswith("mlp:")
            else models.factory(mname, data.n_features, data.n_outputs, config["model"]["activation"]))
        opt = (SGD(t["lr"], momentum=t["momentum"], nesterov=t["nesterov"], weight_decay=t["weight_decay"])
               if t["optimizer"] == "sgd" else AdamW(t["lr"], weight_decay=t["weight_decay"]))
        recipe = Recipe(factory, t["loss"], opt, t["batch_size"],
                        epochs=None if t["steps"] else t["epochs"], steps=t["steps"] or None,
                        schedule=t["schedule"], batching=t["batching"], dtype=getattr(torch, t["dtype"]),
                        checkpoint_every=t["checkpoint_every"] or None)
        test = config["measure"]["test"]
        index = list(range(test)) if isinstance(test, int) else list(test)
        kind = config["measure"]["kind"]
        return cls(config, data, recipe, index, [f"{kind}[test {i}]" for i in index])

    @property
    def methods(self) -> list[str]:
        """The run's attribution methods: the main one first, then those it is compared with."""
        a = self.config["attribute"]
        return [a["method"], *a["compare"]]

    def attribute(self, members: list) -> dict[str, SeedSamples]:
        """Every method's :class:`SeedSamples` for trained ``members`` (fitted together where the
        method batches seeds)."""
        from dtda.attribute import attribute
        from dtda.train import Ensemble, as_data

        data = as_data((self.data.X_train, self.data.y_train), self.recipe.dtype, self.recipe.loss_name)
        ensemble = Ensemble(self.recipe, data, members)
        a = self.config["attribute"]
        return {method: attribute(ensemble, self.measurement(), method, mode=a["mode"], damping=a["damping"],
                                  fisher=a["fisher"], modules=a["modules"], options=a["options"])
                for method in self.methods}

    def measurement(self, count: int | None = None):
        """The configured measurement on the chosen test examples (Q = len(test_index)), or on the
        first ``count`` of them."""
        from dtda import measure

        index = self.test_index[:count]
        X, y = self.data.X_test[index], self.data.y_test[index]
        kind = self.config["measure"]["kind"]
        return measure.output(X) if kind == "output" else getattr(measure, kind)(X, y)


def method_label(attribute: dict, method: str) -> str:
    """The ``SeedSamples.method`` a run stores for ``method``: unroll-<mode> or influence-<name>."""
    return f"unroll-{attribute['mode']}" if method == "unroll" else f"influence-{method}"


# ---- the per-seed task ---------------------------------------------------------------------------

@dataclass
class SeedFailure:
    """A seed whose training stopped (non-finite loss); ``error`` names seed, step and examples."""

    seed: int
    error: str


@dataclass
class SeedJob:
    """One group's work: train (or load) members ``seeds`` in lockstep, then attribute them
    together by every method of the run unless ``train_only``.

    Picklable (it carries only the resolved config and the run path) so process and Ray workers
    rebuild the :class:`Plan` themselves; returns, per seed of the group, (m [Q], {method: δ [N, Q]}),
    None when ``train_only``, or a :class:`SeedFailure`.
    """

    config: dict
    run_path: str
    train_only: bool = False
    _plan: Plan | None = field(default=None, repr=False, compare=False)

    def __getstate__(self):
        return {**self.__dict__, "_plan": None}

    def __call__(self, seeds: tuple[int, ...]) -> list:
        from dtda.train.lockstep import train_group_results
        from dtda.train.workers import torch_threads

        if self._plan is None:
            self._plan = Plan.build(self.config)
        plan = self._plan
        train = (plan.data.X_train, plan.data.y_train)
        with torch_threads(self.config["train"]["threads"]):  # the same bits on every executor
            trained = train_group_results(plan.recipe, train, list(seeds), store=self.run_path)
            out = [SeedFailure(s, str(r)) if isinstance(r, FloatingPointError) else None
                   for s, r in zip(seeds, trained)]
            members = [r for r in trained if not isinstance(r, FloatingPointError)]
            if self.train_only or not members:
                return out
            results = plan.attribute(members)
        m = next(iter(results.values())).m.detach().cpu()
        attributed = iter(range(len(members)))

        def shard(k: int):
            return m[k], {method: s.delta[k].detach().cpu() for method, s in results.items()}
        return [r if r is not None else shard(next(attributed)) for r in out]


# ---- the driver ----------------------------------------------------------------------------------

def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Run:
    """A run directory and its resolved configuration; methods run the stages, skipping done work.

    :meth:`create` and :meth:`open` lock the directory against other processes until :meth:`close`
    (or until this process ends).
    """

    def __init__(self, run: RunDir, config: dict, quiet: bool = False):
        self.dir, self.config, self.quiet = run, config, quiet
        self.seeds = cfgmod.seed_list(config)
        from dtda.report import plots_missing

        if missing := plots_missing():  # said before any work starts, not after training
            _log(f"note: {missing}")

    @classmethod
    def create(cls, config: dict, out: str | Path, force: bool = False, quiet: bool = False) -> "Run":
        """Resolve ``config`` (validated), then make or reopen ``out`` for it."""
        resolved, _ = resolve(config)
        run = RunDir.create(out, cfgmod.to_toml(resolved), cfgmod.fingerprint(resolved), force=force,
                            sources=cfgmod.data_files(resolved))
        return cls(run, resolved, quiet)

    @classmethod
    def open(cls, path: str | Path, quiet: bool = False, overrides: dict | None = None) -> "Run":
        """Reopen an existing run directory; ``overrides`` may change only ``execution``/``report``."""
        run = RunDir.open(path)
        bad = set(overrides or {}) - {"execution", "report"}
        if bad:
            raise cfgmod.ConfigError([f"[{s}]: cannot be changed for an existing run" for s in sorted(bad)])
        try:
            config = cfgmod.load(run.config_path, overrides)
            if cfgmod.fingerprint(config) != run.fingerprint():
                raise RunError(f"{run.config_path} no longer matches the run's fingerprint (was it edited, or a "
                               f"data file changed?); start a new run with --force")
        except BaseException:
            run.close()
            raise
        return cls(run, config, quiet)

    def close(self) -> None:
        """Unlock the run directory for other drivers."""
        self.dir.close()

    # -- stages --

    def failures(self) -> dict[int, str]:
        path = self.dir.failures_path
        return {int(k): v for k, v in self.dir.read_json(path).items()} if self.dir.trusted(path) else {}

    def _record_failure(self, f: SeedFailure) -> None:
        failures = self.failures()
        failures[f.seed] = f.error
        self.dir.write_json(self.dir.failures_path, {str(k): v for k, v in sorted(failures.items())})
        _log(f"seed {f.seed} failed: {f.error}")
        if self.config["execution"]["on_failure"] == "stop":
            raise RunError(f"seed {f.seed} failed and execution.on_failure = 'stop': {f.error}")

    def executor(self):
        """The configured executor (local, process or Ray), its workers running ``train.threads`` threads."""
        from dtda.train import executors

        e = self.config["execution"]
        return executors.make(e["executor"], workers=e["workers"], retries=e["retries"],
                              threads_per_worker=self.config["train"]["threads"], address=e["address"],
                              num_cpus=e["num_cpus"], num_gpus=e["num_gpus"])

    def _run_seeds(self, todo: list[int], train_only: bool, what: str, on_result) -> None:
        """Run the groups (consecutive ``group_size`` seeds of the run) that hold a seed of ``todo``,
        whole: a group is the unit of work, and recomputing it gives its stored members again."""
        from tqdm import tqdm

        from dtda.train.lockstep import groups_of

        if not todo:
            return
        failed = set(self.failures())
        groups = [g for g in groups_of(self.seeds, self.config["execution"]["seeds_per_group"]) if set(g) & set(todo)]
        total = sum(len(g) for g in groups)
        job = SeedJob(self.config, str(self.dir.path), train_only=train_only)
        done = 0
        with tqdm(total=total, desc=what, unit="seed", disable=self.quiet, file=sys.stderr) as bar:
            def handle(group, results):
                nonlocal done
                for seed, result in zip(group, results):
                    if isinstance(result, SeedFailure):
                        if seed not in failed:
                            self._record_failure(result)
                    else:
                        if self.dir.member_path(seed).is_file():  # written by the task (not on a Ray node's disk)
                            self.dir.commit([self.dir.member_path(seed)])
                        on_result(seed, result)
                done += len(group)
                bar.update(len(group))
                if self.quiet:
                    _log(f"{what}: seeds {list(group)} done ({done}/{total})")
            self.executor().run(job, groups, handle)

    def train(self) -> None:
        """Stage 1: train every member not yet stored (and not failed)."""
        skip = set(self.failures())
        todo = [s for s in self.seeds if s not in skip and not self.dir.trusted(self.dir.member_path(s))]
        self._run_seeds(todo, True, "train members", lambda s, r: None)

    def attribute(self) -> None:
        """Stage 2: per-seed shards (training any missing member on the way), then samples.safetensors."""
        skip = set(self.failures())
        todo = [s for s in self.seeds if s not in skip and not self._seed_trusted(s)]
        self._run_seeds(todo, False, "train + attribute members", lambda s, r: self.dir.write_shard(s, *r))
        if not all([self.dir.trusted(p) for p in self._samples_paths()]):  # each checked, each bad one named
            self._reduce()

    def _seed_trusted(self, seed: int) -> bool:
        """Whether the shard of ``seed`` verifies, with the member it was derived from if that is in
        the run (a Ray node without a shared filesystem keeps it). Each file that does not verify is
        removed with a line, so the seed task recomputes it rather than loading it."""
        self.dir.trusted(self.dir.member_path(seed))  # a bad member goes, and the shard made from it is stale
        return self.dir.trusted(self.dir.shard_path(seed))

    def _samples_paths(self) -> list[Path]:
        """samples.safetensors and the samples of every compared method."""
        return [self.dir.samples_path] + [self.dir.compare_path(m) for m in self.config["attribute"]["compare"]]

    def _agreement_input(self) -> list[Path]:
        return [self.dir.agreement_path] if self.config["attribute"]["compare"] else []

    def _failures_input(self) -> list[Path]:
        """failures.json, as an input of what the failed seeds leave out, when there is one."""
        return [self.dir.failures_path] if self.dir.failures_path.is_file() else []

    def _reduce(self) -> None:
        failed = self.failures()
        seeds = [s for s in sorted(self.seeds) if s not in failed]
        if len(seeds) < 2:
            raise RunError(f"only {len(seeds)} seed(s) finished (failed: {sorted(failed)}); at least 2 are "
                           "needed for distributional statistics")
        missing = [s for s in seeds if not self.dir.shard_path(s).is_file()]
        if missing:
            raise RunError(f"no attribution for seeds {missing}; run `dtda attribute {self.dir.path}`")
        shards = [self.dir.read_shard(s) for s in seeds]
        plan = Plan.build(self.config)
        m = torch.stack([m for m, _ in shards])
        for i, method in enumerate(plan.methods):
            samples = SeedSamples(m, torch.stack([d[method] for _, d in shards]), seeds, plan.names,
                                  method_label(self.config["attribute"], method),
                                  meta={"failed_seeds": sorted(failed)})
            path = self.dir.samples_path if i == 0 else self.dir.compare_path(method)
            samples.save(path)  # atomic
            self.dir.commit([path], [self.dir.shard_path(s) for s in seeds] + self._failures_input())

    def statistics(self) -> None:
        """Stage 3: distributional statistics per measurement (bar over measurements) and summary.json."""
        from tqdm import tqdm

        from dtda.ops import registry, use_backend
        from dtda.stats import distributional
        from dtda.train.workers import torch_threads

        self.attribute()
        compare = self.config["attribute"]["compare"]
        if self.dir.trusted(self.stats_path) and self.dir.trusted(self.dir.summary_path) \
                and (not compare or self.dir.trusted(self.dir.agreement_path)):
            return
        samples = read_samples(self.dir.samples_path)
        if compare:
            self._agreement(samples, compare)
        s, threads = self.config["statistics"], self.config["train"]["threads"]
        backend = registry.forced()  # a caller's use_backend(...) is thread-local: pass it on

        def measurement(q: int):
            one = SeedSamples(samples.m[:, q:q + 1], samples.delta[:, :, q:q + 1], samples.seeds,
                              samples.names[q:q + 1], samples.method)
            with use_backend(backend):
                return distributional(one, bootstrap=s["bootstrap"], seed=s["seed"], ci=s["ci"])

        # Each measurement runs at ``threads`` torch threads, so its bits are the same on every
        # machine; the measurements run side by side, one per free core this process may use (the
        # kernels release the GIL), each with the bootstrap's own memory budget.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        concurrent = max(1, min(samples.Q, cores // threads))
        with torch_threads(threads), ThreadPoolExecutor(concurrent) as pool:
            parts = list(tqdm(pool.map(measurement, range(samples.Q)), total=samples.Q, desc="statistics",
                              unit="measurement", disable=self.quiet, file=sys.stderr))
        stats = {name: torch.cat([p.get(name) for p in parts], 1) for name in parts[0].statistics()}
        for name in parts[0].ci:
            stats[f"ci.{name}"] = torch.cat([p.ci[name] for p in parts], 2)
        with atomic_path(self.stats_path) as tmp:
            save_file({k: v.contiguous() for k, v in stats.items()}, str(tmp),
                      metadata={"dtda": json.dumps({"confidence": parts[0].confidence, "bootstrap": parts[0].bootstrap},
                                                sort_keys=True)})
        self.dir.commit([self.stats_path], [self.dir.samples_path])
        from dtda.report.summary import summarize

        labels = Plan.build(self.config).data.y_train.tolist()
        self.dir.write_json(self.dir.summary_path, summarize(self.config, samples, stats, self.failures(), labels),
                            inputs=[self.dir.samples_path, self.stats_path] + self._failures_input())

    def _agreement(self, samples: SeedSamples, compare: list[str]) -> None:
        """``agreement.json``: per compared method and measurement, :func:`dtda.stats.agreement.agreement`
        with the main method (NaN, for a constant side, written as null)."""
        from dtda.stats.agreement import agreement

        out = {}
        for method in compare:
            table = agreement(samples, read_samples(self.dir.compare_path(method)))
            out[method] = {"method": method_label(self.config["attribute"], method), "measurements": samples.names,
                           **{k: [None if v != v else v for v in col.tolist()] for k, col in table.items()}}
        self.dir.write_json(self.dir.agreement_path, out, inputs=self._samples_paths())

    def agreement(self) -> dict:
        """The stored ``agreement.json`` ({} for a run without ``attribute.compare``)."""
        path = self.dir.agreement_path
        return self.dir.read_json(path) if self.config["attribute"]["compare"] and path.is_file() else {}

    @property
    def stats_path(self) -> Path:
        return self.dir.path / "statistics.safetensors"

    def report(self, force: bool = True) -> Path:
        """Stage 4: the report directory (always rewritten when ``force``)."""
        from dtda.report import write_report

        self.statistics()
        if force or not self.dir.trusted_tree(self.dir.report_dir):
            samples = read_samples(self.dir.samples_path)
            stats = read_stats(self.stats_path)
            plan = Plan.build(self.config)
            write_report(self.dir.report_dir, self.config, plan.data, samples, stats, self.failures(),
                         self.agreement())
            self.dir.commit_tree(self.dir.report_dir, [self.dir.samples_path, self.stats_path]
                                 + self._failures_input() + self._agreement_input())
        return self.dir.report_dir

    def ensemble(self):
        """The run's trained members (failed seeds left out) as an :class:`dtda.train.Ensemble`,
        training any that are missing."""
        from dtda.train import Ensemble, as_data, train_member

        plan = Plan.build(self.config)
        data = as_data((plan.data.X_train, plan.data.y_train), plan.recipe.dtype, plan.recipe.loss_name)
        failed = self.failures()
        seeds = [s for s in self.seeds if s not in failed]
        for s in seeds:
            self.dir.trusted(self.dir.member_path(s))  # a damaged member is removed, then retrained
        members = [train_member(plan.recipe, data, s, store=self.dir.path) for s in seeds]
        self.dir.commit([self.dir.member_path(s) for s in seeds])
        return Ensemble(plan.recipe, data, members)

    def diagnose(self, method: str = "exact", measurements: int = 2, seeds: int = 2) -> Path:
        """``diagnose/``: unrolling against influence ``method`` at every recorded checkpoint of the
        first ``seeds`` members, for the first ``measurements`` measurements (PAPER Fig. 3)."""
        import importlib.util

        from dtda.attribute import diagnose, method_options
        from dtda.report.diagnosis import write_diagnosis

        ensemble = self.ensemble()
        ensemble.members = ensemble.members[:seeds]
        a = self.config["attribute"]
        options = {k: v for k, v in a["options"].items() if k in method_options()[method]}
        result = diagnose(ensemble, Plan.build(self.config).measurement(measurements), method=method,
                          damping=a["damping"], fisher=a["fisher"], modules=a["modules"] or None, **options)
        plot = importlib.util.find_spec("matplotlib") is not None
        if not plot:
            _log("diagnose: matplotlib is not installed (pip install 'dtda[report]'); writing the table only")
        out = write_diagnosis(self.dir.path / "diagnose", result, plot=plot)
        self.dir.commit_tree(out, [self.dir.member_path(m.seed) for m in ensemble.members])
        return out

    def all(self) -> Path:
        """Every stage in order, skipping finished work; returns the report directory."""
        t0 = time.perf_counter()
        out = self.report(force=False)
        _log(f"done in {time.perf_counter() - t0:.1f} s: {out / 'index.html'}")
        return out


# ---- samples and statistics on disk --------------------------------------------------------------

def read_samples(path: Path) -> SeedSamples:
    if not path.is_file():
        raise RunError(f"{path} not found; run the attribute stage first (`dtda attribute {path.parent}`)")
    return SeedSamples.load(path)


def read_stats(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise RunError(f"{path} not found; run the statistics stage first (`dtda run` on this directory)")
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # safe_open is not a dict
