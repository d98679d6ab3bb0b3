"""dtda's EK-FAC influence against Kronfluence's on the same models: ``python -m benchmarks.vs_kronfluence``.

Two cases, each a model trained once by dtda (one seed, SGD without weight decay) and handed to
both tools with the same weights:

- ``mlp``: the demo's 64-128-128-10 ReLU MLP on scikit-learn's digits (N = 1437 training
  examples, split seed 0, standardised), cross-entropy, 10 epochs; Q = 20 test digits.
- ``block``: a transformer-style block on N = 512 synthetic sequences of T = 128 tokens, d = 256:
  f(x) = mean_t (x_t + W₂ GELU(W₁ x_t + b₁) + b₂) with W₁: 256 → 1024, W₂: 1024 → 256 (residual
  connection, mean pooling over tokens), per-sequence loss ``mse`` (mean over the 256 outputs of
  (f(x) − y)², dtda's "mse"), targets from a fixed random teacher block plus noise, 1 epoch of
  batches of 64; Q = 16 held-out sequences.

Both tools compute EK-FAC with the empirical Fisher (true labels) over all covered layers (every
``nn.Linear``, bias as an extra input column in both), the measurement m_q = the loss of query q,
and the same fixed damping λ (``--damping``, default per case, :data:`DAMPING`). The curvature
matches term by term:

- Kronfluence (``FactorArguments(strategy="ekfac", use_empirical_fisher=True)``,
  ``ScoreArguments(damping_factor=λ)``): eigenbases of its activation and gradient covariances, the
  corrected eigenvalues Λ = (1/N) Σ_n (Q_Sᵀ G_n Q_A)^∘2 from per-example gradients G_n of the
  summed training loss, then (Λ + λ)⁻¹ in that basis. Its pairwise score is
  S_kf[q, n] = ∇m_qᵀ (H + λI)⁻¹ ∇ℓ_n with H the EK-FAC of the uncentred Fisher normalised by N.
- dtda (``dtda.influence(..., method="ekfac", fisher="empirical", damping=λ)``): the same Λ
  (A, S normalised differently, which changes no eigenbasis), H + λI with H = F + λ_wd I and
  λ_wd = 0 (the recipe has no weight decay), and δ[n, q] = +(1/N) ∇m_qᵀ (H + λI)⁻¹ ∇ℓ_n
  (after removal minus before, PAPER §4.1).

So N·δᵀ and S_kf are the same [Q, N] matrix (no sign flip); the scores are compared in that form.
Precision as a user gets it by default: Kronfluence accumulates covariances and Λ and scores in
float32 (eigendecompositions in float64); dtda accumulates and decomposes in float64 and scores
in the model's float32.

Per tool and case a fresh child process (fixed malloc thresholds, ``--threads`` torch threads,
default 2) trains the model (not timed; dtda's training is bit-identical on CPU, and the parent
checks that both children saw the same weights), then runs the tool once under a
:class:`benchmarks.common.Timeline`. ``--repeats R`` runs each tool R times, the tools taking
turns, and shows the median per stage and of the totals (and the largest peaks). Stages and
where their boundaries are:

- Kronfluence: ``covariance`` = ``Analyzer.fit_covariance_matrices``, ``eigendecomposition`` =
  ``perform_eigendecomposition``, ``Λ`` = ``fit_lambda_matrices`` (each includes writing its
  factors to a temporary ``output_dir``, as Kronfluence always does), ``query precondition`` =
  ``compute_pairwise_scores`` up to its dot products with the training set (query gradients,
  their EK-FAC preconditioning in its backward hooks, loading factors), ``pairwise scores`` = its
  dot products with every training example and the rest of the call (saving the scores);
  ``other`` = ``prepare_model``, ``Analyzer`` construction, reading the scores back.
- dtda: ``covariance`` = the first pass over the data (capture + ``kron_covariance``),
  ``eigendecomposition`` = the batched float64 ``eigh``, ``Λ`` = the second pass
  (``ekfac_eigvals``), ``query precondition`` = the measurement's gradients (``query_gradient``) and
  ``KroneckerCurvature.solve`` (``kron_apply``), ``pairwise scores`` = ``dtda.attribute.influence.score``
  (``ghost_dot``); ``other`` = the rest of ``dtda.influence`` (argument checks, building the module).
  The boundaries come from wrapping those functions for the one timed call (no code of dtda's is
  reproduced here); a wrapper that is never called fails the run, so a refactor cannot silently
  move time between stages.

Memory: per stage, the peak resident set above the process's RSS at the stage's start
(``/proc/self/status`` VmHWM, reset through ``/proc/self/clear_refs`` at every boundary; torch's CPU
allocations are resident memory, so they are counted), and the run's peak above its RSS before the
tool started (model, data and imports already resident).

Agreement of dtda's N·δᵀ with Kronfluence's S_kf: Pearson over all Q·N entries, the smallest
per-query Pearson over the N examples, the median per-query Spearman and the mean top-10 overlap
(the share of the 10 largest |score| examples the two have in common), with the functions of
:mod:`dtda.stats.agreement`. Targets (issue 8): Pearson ≥ 0.999; dtda's total ≤ 0.5 × Kronfluence's
on the block, far below it on the MLP.

``--quick`` runs both cases at toy sizes (:data:`QUICK`) for the test; the table is then
meaningless as a timing. Kronfluence is installed for the benchmark only, never a dtda
dependency (docs/influence.md, "Against Kronfluence", gives the install lines); without it the
script prints why and times dtda alone.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable
from unittest import mock

import torch
from torch import Tensor, nn

import dtda
from benchmarks.common import Timeline, run_child

STAGES = ("covariance", "eigendecomposition", "Λ", "query precondition", "pairwise scores", "other")
TOOLS = ("kronfluence", "dtda")
CASES = ("mlp", "block")
# λ per case: about 0.1 × the mean EK-FAC eigenvalue of the trained model (Kronfluence's heuristic
# scale), rounded to a fixed number that both tools are given.
DAMPING = {"mlp": 5e-6, "block": 1e-9}


# ---- the two cases --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sizes:
    """A case's problem size. mlp: N ≤ 0 keeps digits' whole training split."""

    N: int
    Q: int
    batch_size: int
    epochs: int
    T: int = 1
    d: int = 64
    hidden: tuple[int, ...] = (128, 128)


FULL = {"mlp": Sizes(N=0, Q=20, batch_size=512, epochs=10),
        "block": Sizes(N=512, Q=16, batch_size=64, epochs=1, T=128, d=256, hidden=(1024,))}
QUICK = {"mlp": Sizes(N=300, Q=8, batch_size=128, epochs=2, hidden=(32,)),
         "block": Sizes(N=64, Q=4, batch_size=32, epochs=1, T=16, d=32, hidden=(128,))}


@dataclass(frozen=True)
class ResidualBlock:
    """Zero-argument factory of the block: x [B, T, d] -> mean_t (x + fc2(GELU(fc1(x)))) [B, d]."""

    d: int
    hidden: int

    def __call__(self) -> nn.Module:
        return _Block(self.d, self.hidden)


class _Block(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d)

    def forward(self, x: Tensor) -> Tensor:
        return (x + self.fc2(self.act(self.fc1(x)))).mean(1)


@dataclass
class Setup:
    """A trained one-member ensemble, its queries (X_q, y_q) and the streaming batch size."""

    case: str
    ensemble: dtda.Ensemble
    Xq: Tensor
    yq: Tensor
    batch_size: int

    @property
    def loss_fn(self) -> Callable[[Tensor, Tensor], Tensor]:
        return self.ensemble.recipe.loss_fn

    @property
    def N(self) -> int:
        return len(self.ensemble.data)

    def model(self) -> nn.Module:
        return self.ensemble.model(0)


def _digits(s: Sizes) -> tuple[tuple[Tensor, Tensor], Tensor, Tensor, dtda.Recipe]:
    from dtda.models import MLP
    from dtda.sources import load

    data = load({"source": "sklearn:digits", "split_seed": 0, "test_fraction": 0.2, "max_train": max(s.N, 0),
                 "standardize": True, "task": "classification"})
    recipe = dtda.Recipe(model=MLP(data.n_features, s.hidden, data.n_outputs), loss="cross_entropy",
                         optimizer=dtda.SGD(lr=0.03, momentum=0.9), batch_size=64, epochs=s.epochs)
    return (data.X_train, data.y_train), data.X_test[:s.Q], data.y_test[:s.Q], recipe


def _sequences(s: Sizes) -> tuple[tuple[Tensor, Tensor], Tensor, Tensor, dtda.Recipe]:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(s.N + s.Q, s.T, s.d, generator=gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        teacher = ResidualBlock(s.d, s.hidden[0])()
    with torch.no_grad():
        y = teacher(X) + 0.1 * torch.randn(s.N + s.Q, s.d, generator=gen)
    recipe = dtda.Recipe(model=ResidualBlock(s.d, s.hidden[0]), loss="mse",
                         optimizer=dtda.SGD(lr=0.1, momentum=0.9), batch_size=64, epochs=s.epochs)
    return (X[:s.N], y[:s.N]), X[s.N:], y[s.N:], recipe


def setup(case: str, quick: bool = False) -> Setup:
    """Train ``case``'s model (seed 0; deterministic) and return it with its queries."""
    sizes = (QUICK if quick else FULL)[case]
    train, Xq, yq, recipe = (_digits if case == "mlp" else _sequences)(sizes)
    return Setup(case, dtda.train_ensemble(recipe, train, [0]), Xq, yq, sizes.batch_size)


def checksum(model: nn.Module) -> float:
    """Σ|θ| in float64: equal in both children iff they trained the same weights (the parent compares them)."""
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


# ---- dtda ----------------------------------------------------------------------------------------

@contextmanager
def dtda_stages(timeline: Timeline):
    """Mark ``timeline`` at dtda's stage boundaries (see the module docstring) while in the block;
    yields a dict that then holds "mean", the mean EK-FAC eigenvalue Λ over all covered layers."""
    from dtda.curvature import kronecker

    influence_mod = importlib.import_module("dtda.attribute.influence")  # the package re-exports the function

    eigenvalues: dict[str, float] = {}
    calls = {"grouped_passes": 0, "_eigh_batched": 0, "query_gradient": 0, "solve": 0, "score": 0}

    def timed(name: str, stage: str, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            timeline.mark(stage)
            try:
                return fn(*args, **kwargs)
            finally:
                timeline.mark("other")
        return call

    passes = kronecker.grouped_passes

    def pass_over_data(*args, **kwargs):  # a generator: the pass lasts until the caller exhausts it
        calls["grouped_passes"] += 1
        timeline.mark("covariance" if calls["grouped_passes"] % 2 else "Λ")
        yield from passes(*args, **kwargs)
        timeline.mark("other")

    solve = kronecker.KroneckerCurvature.solve

    def solve_and_record(curvature, *args, **kwargs):
        lams = list(curvature.eigenvalues().values())
        eigenvalues["mean"] = float(sum(lam.sum() for lam in lams) / sum(lam.numel() for lam in lams))
        return solve(curvature, *args, **kwargs)

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(kronecker, "grouped_passes", pass_over_data))
        stack.enter_context(mock.patch.object(kronecker, "_eigh_batched", timed(
            "_eigh_batched", "eigendecomposition", kronecker._eigh_batched)))
        stack.enter_context(mock.patch.object(influence_mod, "query_gradient", timed(
            "query_gradient", "query precondition", influence_mod.query_gradient)))
        stack.enter_context(mock.patch.object(kronecker.KroneckerCurvature, "solve", timed(
            "solve", "query precondition", solve_and_record)))
        stack.enter_context(mock.patch.object(influence_mod, "score", timed(
            "score", "pairwise scores", influence_mod.score)))
        yield eigenvalues
    missing = [name for name, count in calls.items() if count == 0]
    if missing or calls["grouped_passes"] != 2:
        raise RuntimeError(f"dtda's influence no longer calls {missing or 'grouped_passes twice'} "
                           f"(calls: {calls}); update benchmarks/vs_kronfluence.py's stage boundaries")


def run_dtda(s: Setup, damping: float, timeline: Timeline | None = None) -> tuple[Tensor, dict]:
    """dtda's EK-FAC scores in Kronfluence's scale, N·δᵀ [Q, N] (float64), and with a timeline
    {"mean_eigenvalue": the mean Λ}."""
    measure = dtda.measure.loss(s.Xq, s.yq, s.ensemble.recipe.loss)
    with dtda_stages(timeline) if timeline is not None else ExitStack() as eigenvalues:
        samples = dtda.influence(s.ensemble, measure, method="ekfac", damping=damping, fisher="empirical",
                                 batch_size=s.batch_size)
    info = {"mean_eigenvalue": eigenvalues["mean"]} if timeline is not None else {}
    return samples.delta[0].double().T * s.N, info


# ---- Kronfluence ---------------------------------------------------------------------------------

def kronfluence_unavailable() -> str:
    """'' when Kronfluence can run here, else why not."""
    from benchmarks import anchors

    return anchors.unavailable("kronfluence")


def _kronfluence_task(loss_fn: Callable[[Tensor, Tensor], Tensor]):
    from kronfluence.task import Task

    class LossTask(Task):
        """Training loss Σ_n ℓ_n and measurement Σ_q ℓ_q with dtda's per-example loss."""

        def compute_train_loss(self, batch, model, sample=False):
            if sample:
                raise ValueError("this benchmark uses the empirical Fisher (use_empirical_fisher=True)")
            x, y = batch
            return loss_fn(model(x), y).sum()

        def compute_measurement(self, batch, model):
            x, y = batch
            return loss_fn(model(x), y).sum()

    return LossTask()


def run_kronfluence(s: Setup, damping: float, timeline: Timeline) -> tuple[Tensor, dict]:
    """Kronfluence's EK-FAC pairwise scores S_kf [Q, N] (float64) and an empty info dict."""
    import logging

    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.score import pairwise
    from kronfluence.utils.dataset import DataLoaderKwargs
    from torch.utils.data import TensorDataset

    data = s.ensemble.data
    train, queries = TensorDataset(data.X, data.y), TensorDataset(s.Xq, s.yq)
    factor_args = FactorArguments(strategy="ekfac", use_empirical_fisher=True)
    score_args = ScoreArguments(damping_factor=damping)
    dot_products = pairwise.compute_dot_products_with_loader

    def scores_against_training(*args, **kwargs):
        timeline.mark("pairwise scores")
        return dot_products(*args, **kwargs)

    with tempfile.TemporaryDirectory(prefix="vs_kronfluence.") as out, warnings.catch_warnings():
        # Kronfluence 1.0.1 calls torch.cuda.amp.GradScaler, deprecated in this torch, once per stage.
        warnings.filterwarnings("ignore", category=FutureWarning, module="kronfluence")
        task = _kronfluence_task(s.loss_fn)
        model = prepare_model(s.model(), task)
        analyzer = Analyzer("bench", model, task, cpu=True, disable_tqdm=True, output_dir=out,
                            log_level=logging.WARNING)
        analyzer.set_dataloader_kwargs(DataLoaderKwargs(num_workers=0))
        factors = dict(factors_name="ekfac", factor_args=factor_args)
        timeline.mark("covariance")
        analyzer.fit_covariance_matrices(dataset=train, per_device_batch_size=s.batch_size, **factors)
        timeline.mark("eigendecomposition")
        analyzer.perform_eigendecomposition(**factors)
        timeline.mark("Λ")
        analyzer.fit_lambda_matrices(dataset=train, per_device_batch_size=s.batch_size, **factors)
        timeline.mark("query precondition")
        with mock.patch.object(pairwise, "compute_dot_products_with_loader", scores_against_training):
            analyzer.compute_pairwise_scores(scores_name="scores", factors_name="ekfac", query_dataset=queries,
                                             train_dataset=train, per_device_query_batch_size=len(queries),
                                             per_device_train_batch_size=s.batch_size, score_args=score_args)
        timeline.mark("other")
        scores = analyzer.load_pairwise_scores("scores")["all_modules"]
    if "pairwise scores" not in timeline.seconds:
        raise RuntimeError("Kronfluence no longer calls pairwise.compute_dot_products_with_loader; update "
                           "benchmarks/vs_kronfluence.py's stage boundaries")
    return scores.double(), {}


# ---- one tool on one case, in a fresh process ----------------------------------------------------

def child(request: dict) -> dict:
    """Train the case, run one tool under a timeline, save its [Q, N] scores to request["out"].

    Outside quick mode the tool first runs once on the quick version of the case, so that lazy
    imports and first-call costs (torch.func's first ``jacrev``, where a measurement takes it,
    imports torch._dynamo and sympy: seconds) are not timed, as benchmarks/ops.py warms every
    implementation up.
    """
    torch.set_num_threads(request["threads"])
    if request["tool"] == "kronfluence":
        why = kronfluence_unavailable()  # hides the broken torchvision before kronfluence imports it
        if why:
            raise RuntimeError(why)
    run = run_kronfluence if request["tool"] == "kronfluence" else run_dtda
    if not request["quick"]:
        run(setup(request["case"], quick=True), request["damping"], Timeline())
    s = setup(request["case"], request["quick"])
    timeline = Timeline()
    timeline.mark("other")
    scores, info = run(s, request["damping"], timeline)
    timeline.close()
    torch.save(scores, request["out"])
    return {"seconds": timeline.seconds, "peaks": timeline.peaks, "peak": timeline.peak,
            "total": timeline.total, "checksum": checksum(s.model()), "N": s.N, "Q": len(s.Xq), **info}


# ---- comparison and table ------------------------------------------------------------------------

def agreement(reference: Tensor, other: Tensor) -> dict[str, float]:
    """Agreement of two [Q, N] score matrices (see the module docstring)."""
    from dtda.stats.agreement import pearson, spearman

    a, b = reference.double(), other.double()
    k = min(10, a.shape[1])
    top_a, top_b = a.abs().topk(k, dim=1).indices, b.abs().topk(k, dim=1).indices
    overlap = (top_a[:, :, None] == top_b[:, None, :]).any(2).sum(1).double() / k
    return {"pearson": float(pearson(a.flatten(), b.flatten())),
            "min_query_pearson": float(pearson(a, b, dim=1).min()),
            "median_query_spearman": float(spearman(a, b, dim=1).median()),
            "top10_overlap": float(overlap.mean())}


def _median_of(runs: list[dict]) -> dict:
    """One tool's repeated runs as one: median seconds per stage and total, largest peaks."""
    stages = {stage for r in runs for stage in r["seconds"]}
    return {**runs[0], "runs": len(runs),
            "seconds": {st: statistics.median(r["seconds"].get(st, 0.0) for r in runs) for st in stages},
            "peaks": {st: max(r["peaks"].get(st, 0) for r in runs) for st in stages},
            "peak": max(r["peak"] for r in runs), "total": statistics.median(r["total"] for r in runs),
            "totals": [r["total"] for r in runs]}


def compare(case: str, quick: bool, threads: int, damping: float, tools: tuple[str, ...],
            repeats: int = 1) -> dict:
    """Run each tool on ``case`` ``repeats`` times, each run in its own process, the tools taking
    turns (so a change in the machine's load reaches both); their results and, with both, the
    agreement of the first runs' scores."""
    out: dict = {"case": case, "damping": damping, "results": {}}
    runs: dict[str, list[dict]] = {tool: [] for tool in tools}
    with tempfile.TemporaryDirectory(prefix="vs_kronfluence.") as tmp:
        scores = {}
        for _ in range(repeats):
            for tool in tools:
                path = os.path.join(tmp, f"{tool}.pt")
                result = run_child("benchmarks.vs_kronfluence", {"tool": tool, "case": case, "quick": quick,
                                                                 "threads": threads, "damping": damping,
                                                                 "out": path}, f"{tool} on {case}")
                if isinstance(result, str):
                    out["results"][tool] = result
                    continue
                runs[tool].append(result)
                scores.setdefault(tool, torch.load(path))
        for tool, done in runs.items():
            if done:
                out["results"][tool] = _median_of(done)
        if len(scores) == 2:
            sums = {tool: out["results"][tool]["checksum"] for tool in scores}
            if sums["dtda"] != sums["kronfluence"]:
                raise RuntimeError(f"{case}: the two children trained different weights (Σ|θ| {sums})")
            out["agreement"] = agreement(scores["dtda"], scores["kronfluence"])
    return out


def _mib(b: int) -> str:
    return f"{b / 2**20:.0f}"


def print_case(c: dict) -> None:
    results = {t: r for t, r in c["results"].items() if isinstance(r, dict)}
    for tool, r in c["results"].items():
        if isinstance(r, str):
            print(f"  {tool}: {r}")
    if not results:
        return
    any_r = next(iter(results.values()))
    mean = results.get("dtda", {}).get("mean_eigenvalue")
    print(f"\n{c['case']}: N = {any_r['N']}, Q = {any_r['Q']}, λ = {c['damping']:g}, "
          f"median of {any_r['runs']} run(s) per tool"
          + (f" (mean EK-FAC eigenvalue {mean:.3g})" if mean is not None else ""))
    cols = [t for t in TOOLS if t in results]
    header = f"{'stage':<20}" + "".join(f"{t + ' s':>14}{'peak MiB':>10}" for t in cols)
    both = len(cols) == 2
    header += f"{'kf / dtda':>11}" if both else ""
    print(header)
    print("-" * len(header))
    for stage in (*STAGES, "total"):
        line = f"{stage:<20}"
        for t in cols:
            r = results[t]
            sec = r["total"] if stage == "total" else r["seconds"].get(stage, 0.0)
            peak = r["peak"] if stage == "total" else r["peaks"].get(stage, 0)
            line += f"{sec:>14.3f}{_mib(peak):>10}"
        if both:
            get = (lambda t: results[t]["total"]) if stage == "total" else \
                (lambda t: results[t]["seconds"].get(stage, 0.0))
            line += f"{get('kronfluence') / get('dtda'):>11.2f}" if get("dtda") > 0 else f"{'-':>11}"
        print(line)
    if any_r["runs"] > 1:
        print("totals of the runs: " + "; ".join(
            f"{t} " + ", ".join(f"{x:.2f}" for x in results[t]["totals"]) for t in cols))
    if "agreement" in c:
        a = c["agreement"]
        ratio = results["dtda"]["total"] / results["kronfluence"]["total"]
        print(f"agreement (dtda N·δᵀ vs Kronfluence's scores): Pearson {a['pearson']:.6f} "
              f"(1 − r = {1 - a['pearson']:.1e}; min per query {a['min_query_pearson']:.6f}), "
              f"median per-query Spearman {a['median_query_spearman']:.6f}, "
              f"top-10 overlap {a['top10_overlap']:.3f}; "
              f"dtda total / Kronfluence total = {ratio:.3f}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vs_kronfluence",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (for the test), seconds")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {CASES}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per child (default 2)")
    parser.add_argument("--damping", type=float, default=None,
                        help=f"λ for both tools (default per case: {DAMPING})")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per tool and case, the tools taking turns; medians are shown (default 1)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return []
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {unknown}; cases are {list(CASES)}")
    if args.repeats < 1:
        parser.error(f"--repeats must be ≥ 1, got {args.repeats}")
    if args.damping is not None and not (math.isfinite(args.damping) and args.damping >= 0):
        parser.error(f"--damping must be a finite number ≥ 0, got {args.damping}")
    why = kronfluence_unavailable()
    tools = TOOLS if not why else ("dtda",)
    versions = f"dtda {getattr(dtda, '__version__', '?')}, torch {torch.__version__}"
    if why:
        print(f"Kronfluence unavailable ({why}); timing dtda alone. Install it beside this torch: "
              "python -m venv VENV && VENV/bin/pip install torch==<this torch> kronfluence==1.0.1")
    else:
        from benchmarks import anchors
        versions += f", {anchors.version('kronfluence')}"
    load = os.getloadavg()
    print(f"{versions}; {args.threads} torch threads per child, float32 models, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    start = time.perf_counter()
    results = []
    for case in cases:
        damping = DAMPING[case] if args.damping is None else args.damping
        results.append(compare(case, args.quick, args.threads, damping, tools, args.repeats))
        print_case(results[-1])
    load = os.getloadavg()
    print(f"\n(s = wall seconds per stage; peak = peak RSS above the RSS at the stage's start, total row: "
          f"above the RSS before the tool ran; kf / dtda = Kronfluence's time over dtda's; "
          f"{time.perf_counter() - start:.0f} s, load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"versions": versions, "threads": args.threads, "repeats": args.repeats, "cases": results},
                      f, indent=1)
    return results


if __name__ == "__main__":
    main()
