"""The distributional LDS table (issue 10, reproduction 4; PAPER §8.2, §8.3): every attribution
method of dtda × statistic × dataset × α, against one shared subset-retraining ground truth.

Methods: reverse unrolling (``unroll``) and every influence function of ``dtda.influence``
(identity, diagonal, kfac, ekfac, cg, lissa, astra, source, and ``exact`` where the model has at
most 5000 parameters). Statistics: mean shift (the classical LDS), variance increase, W2 and
shape W2. Datasets: scikit-learn's digits (classification, m = test margins) and diabetes
(regression, m = test outputs), each with a small MLP. α ∈ {0.5, 0.9, 0.99}: the fraction of the
training set each subset keeps.

Per dataset the script creates a run directory (``<run>/<dataset>``: trained members, and the
retrain cache ``retrain/`` that ``dtda evaluate`` uses too), attributes the K members with every
method (timed: seconds per seed), retrains every subset on R = K coupled seeds once per α (subset
mode, timed) and scores every (method, statistic) with :func:`dtda.evaluate.lds` against that one
cached ground truth, with the noise ceiling and a bootstrap CI over measurements.

    python examples/reproduce_lds_table.py            # docs/results/lds-table.{md,json,png}
    python examples/reproduce_lds_table.py --quick    # tiny sizes, seconds (CI; a temporary folder)

A killed run resumes: trained members and retrainings are read back from the run directories.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STATS = ("mean", "var_increase", "w2", "shape_w2")
STAT_LABELS = {"mean": "mean shift", "var_increase": "variance increase", "w2": "W2", "shape_w2": "shape W2"}
ALPHAS = (0.5, 0.9, 0.99)
INFLUENCE = ("identity", "diagonal", "kfac", "ekfac", "exact", "cg", "lissa", "astra", "source")
EXACT_MAX_PARAMS = 5000  # dtda.influence refuses method="exact" above this many parameters

# (full, quick) sizes. Full: sized to run in about 30 minutes on 2 shared cores.
SIZES = {"full": dict(seeds=8, subsets=50, max_train={"digits": 400, "diabetes": 0}, epochs=None),
         "quick": dict(seeds=4, subsets=4, max_train={"digits": 80, "diabetes": 80}, epochs=2)}
OPTIONS = {"full": {"max_iter": 100, "iterations": 300},   # cg, lissa as in docs/influence.md; astra's 200
           "quick": {"max_iter": 20, "iterations": 30}}


def dataset_config(name: str, quick: bool) -> dict:
    """The raw run configuration of ``name`` (digits or diabetes)."""
    size = SIZES["quick" if quick else "full"]
    if name == "digits":
        cfg = {"data": {"source": "sklearn:digits"}, "model": {"name": "mlp:16" if quick else "mlp:32"},
               "train": {"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-3, "batch_size": 32, "epochs": 8},
               "measure": {"kind": "margin", "test": 10}}
    elif name == "diabetes":
        cfg = {"data": {"source": "sklearn:diabetes"}, "model": {"name": "mlp:32,32", "activation": "tanh"},
               "train": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "batch_size": 32, "epochs": 15},
               "measure": {"kind": "output", "test": 10}}
    else:
        raise ValueError(f"dataset must be 'digits' or 'diabetes', got {name!r}")
    cfg["data"]["max_train"] = size["max_train"][name]
    cfg["train"]["seeds"] = size["seeds"]
    if size["epochs"]:  # a few steps: a checkpoint at each, so that SOURCE has its 3 segments
        cfg["train"].update(epochs=size["epochs"], checkpoint_every=1)
    return cfg


def attribute_all(ensemble, measure, methods: list[str], options: dict) -> tuple[dict, dict]:
    """({method: SeedSamples}, {method: seconds per seed}) for every method, each timed whole
    (curvature fit, query gradients, scoring all N examples) over the K members."""
    from dtda.attribute import attribute

    samples, seconds = {}, {}
    for method in methods:
        t0 = time.perf_counter()
        samples[method] = attribute(ensemble, measure, method, options=options)
        seconds[method] = (time.perf_counter() - t0) / len(ensemble)
        print(f"  {method}: {seconds[method]:.3f} s/seed", file=sys.stderr, flush=True)
    return samples, seconds


def evaluate_dataset(name: str, args) -> dict:
    """Train, attribute, retrain (once per α) and score every (method, statistic, α) of ``name``."""
    from dtda import config as cfgmod
    from dtda.evaluate import lds, retrained_samples
    from dtda.evaluate.lds import draw_removals
    from dtda.pipeline import Plan, Run
    from dtda.train.workers import torch_threads

    size = SIZES["quick" if args.quick else "full"]
    raw = dataset_config(name, args.quick)
    raw["execution"] = {"executor": "process" if args.workers > 1 else "local", "workers": args.workers}
    run = Run.create(cfgmod.validate(raw, source=name), Path(args.run) / name, quiet=True)
    try:
        plan = Plan.build(run.config)
        train = (plan.data.X_train, plan.data.y_train)
        measure = plan.measurement()
        t0 = time.perf_counter()
        run.train()
        ensemble = run.ensemble()
        train_s = time.perf_counter() - t0
        d = sum(p.numel() for p in plan.recipe.build(0).parameters())
        methods = ["unroll"] + [m for m in INFLUENCE if m != "exact" or d <= EXACT_MAX_PARAMS]
        print(f"{name}: N = {len(train[0])}, d = {d}, K = {len(ensemble)}, Q = {len(plan.names)}",
              file=sys.stderr, flush=True)
        with torch_threads(run.config["train"]["threads"]):
            samples, seconds = attribute_all(ensemble, measure, methods, OPTIONS["quick" if args.quick else "full"])
            common = dict(recipe=plan.recipe, train=train, measure=measure, cache=run.dir.path / "retrain",
                          executor=run.executor())
            out = {"N": len(train[0]), "params": d, "K": len(ensemble), "Q": len(plan.names),
                   "train_s": round(train_s, 2), "seconds_per_seed": seconds, "alphas": {}}
            for alpha in ALPHAS:
                removals = [torch.nonzero(r).flatten().tolist()
                            for r in draw_removals(len(train[0]), alpha, size["subsets"], 0)]
                cached = len(list((run.dir.path / "retrain").rglob("*.safetensors")))
                t0 = time.perf_counter()  # the shared ground truth: trained once, then read from the cache
                retrained_samples(samples["unroll"], removals=removals, mode="subset", **common)
                wall = time.perf_counter() - t0
                trained = len(list((run.dir.path / "retrain").rglob("*.safetensors"))) - cached
                scores = {method: {stat: lds(samples[method], alpha=alpha, subsets=size["subsets"], stat=stat,
                                             mode="subset", bootstrap=1000, **common).to_dict()
                                   for stat in STATS} for method in methods}
                out["alphas"][str(alpha)] = {
                    "removed": len(train[0]) - round(alpha * len(train[0])), "subsets": size["subsets"],
                    "retrain_seeds": len(ensemble), "retrain_wall_s": round(wall, 2), "retrained_runs": trained,
                    "retrain_s_per_run": round(wall / trained, 4) if trained else None, "scores": scores}
                print(f"  α = {alpha}: {trained} retrainings in {wall:.1f} s", file=sys.stderr, flush=True)
        run.dir.commit_tree(run.dir.path / "retrain", [run.dir.config_path])
    finally:
        run.close()
    return out


# ---- writing -------------------------------------------------------------------------------------

def _cell(score: dict) -> str:
    s, (lo, hi) = score["score"], score["ci"]
    return "–" if s is None else f"{s:.2f} [{lo:.2f}, {hi:.2f}]"


def _num(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def markdown(results: dict) -> str:
    """One table per (dataset, α): methods × statistics, with the noise ceiling and costs."""
    lines = [f"# Distributional LDS table ({'quick' if results['quick'] else 'full'} mode)", "",
             f"Subset-mode retraining; LDS = mean over measurements of the Spearman correlation over subsets; "
             f"[95% bootstrap CI over measurements]. Wall time {results['wall_s']:.0f} s "
             f"(load average {results['load_before']} before, {results['load_after']} after).", ""]
    for name, r in results["datasets"].items():
        lines += [f"## {name}: N = {r['N']}, {r['params']} parameters, K = R = {r['K']} seeds, Q = {r['Q']}", ""]
        for alpha, a in r["alphas"].items():
            lines += [f"### α = {alpha} ({a['removed']} of {r['N']} removed per subset, {a['subsets']} subsets; "
                      f"retraining {a['retrain_wall_s']:.1f} s for {a['retrained_runs']} runs)", "",
                      "| method | s / seed | " + " | ".join(STAT_LABELS[s] for s in STATS) + " |",
                      "|---|---|" + "---|" * len(STATS)]
            for method, scores in a["scores"].items():
                lines.append(f"| {method} | {r['seconds_per_seed'][method]:.3g} | "
                             + " | ".join(_cell(scores[s]) for s in STATS) + " |")
            ceiling = next(iter(a["scores"].values()))
            lines += ["| *noise ceiling* | | " + " | ".join(_num(ceiling[s]["noise_ceiling"]) for s in STATS) + " |",
                      ""]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """LDS by method × statistic, one panel per (dataset, α), CIs as error bars, ceilings dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(len(names), len(ALPHAS), figsize=(5.2 * len(ALPHAS), 3.6 * len(names)),
                             squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / len(STATS)
    for i, name in enumerate(names):
        for j, alpha in enumerate(ALPHAS):
            ax, a = axes[i][j], results["datasets"][name]["alphas"][str(alpha)]
            methods = list(a["scores"])
            for k, stat in enumerate(STATS):
                xs = [x + (k - (len(STATS) - 1) / 2) * width for x in range(len(methods))]
                got = [a["scores"][m][stat] for m in methods]
                ys = [g["score"] if g["score"] is not None else float("nan") for g in got]
                err = [[y - (g["ci"][0] if g["ci"][0] is not None else y) for y, g in zip(ys, got)],
                       [(g["ci"][1] if g["ci"][1] is not None else y) - y for y, g in zip(ys, got)]]
                ax.bar(xs, ys, width, yerr=err, color=colors[k], label=STAT_LABELS[stat], capsize=1.5)
                ceiling = got[0]["noise_ceiling"]
                if ceiling is not None:
                    ax.axhline(ceiling, color=colors[k], ls="--", lw=1)
            ax.axhline(0, color="black", lw=0.5)
            ax.set_xticks(range(len(methods)), methods, rotation=60, fontsize=7)
            ax.set_ylim(-0.3, 1.05)
            ax.set_title(f"{name}, α = {alpha}", fontsize=9)
            if j == 0:
                ax.set_ylabel("LDS (dashed: noise ceiling)")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _load() -> str:
    import os

    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (4 seeds, 4 subsets, 80 examples): for CI")
    ap.add_argument("--out", help="folder for lds-table.md/.json/.png (default docs/results; --quick: a temp folder)")
    ap.add_argument("--run", help="folder of the run directories (default: <out>/lds-runs)")
    ap.add_argument("--datasets", default="digits,diabetes")
    ap.add_argument("--workers", type=int, default=1, help="processes for the retraining")
    args = ap.parse_args(argv)
    from dtda.atomic import atomic_path, atomic_write_text

    torch.set_num_threads(1)  # tiny models gain nothing from more threads, and shared cores lose a lot
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="lds-")) if args.quick
                                           else ROOT / "docs" / "results")
    args.run = args.run or str(out / "lds-runs")
    stem = "lds-table-quick" if args.quick else "lds-table"
    load_before, t0 = _load(), time.perf_counter()
    results = {"quick": args.quick, "datasets": {n: evaluate_dataset(n, args) for n in args.datasets.split(",")}}
    results.update(wall_s=round(time.perf_counter() - t0, 1), load_before=load_before, load_after=_load(),
                   workers=args.workers)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(out / f"{stem}.md", markdown(results))
    with atomic_path(out / f"{stem}.png") as tmp:
        plot(results, tmp)
    print(out / f"{stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
