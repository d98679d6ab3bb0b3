"""Reproduce PAPER §4.1 / §9 E2 (the paper's Fig. 3) at CPU scale: unrolling converges to the
influence function over training, faster for a smaller learning rate.

Setting (PAPER §9 ``regression-mlp``, scaled so that the curvature fits an explicit matrix):
scikit-learn's bundled ``diabetes`` (353 train / 89 test, x and y standardised), MLP 10-16-16-1
ReLU (d = 465), mse, SGD momentum 0.9, batch 32, no weight decay (weight decay would make the
curvature's null space empty), float64, the same number of steps at two learning rates. For each
seed and a log-spaced set of checkpoints t, :func:`dtda.attribute.diagnose` attributes the run
truncated at t twice (reverse-mode unrolling through its first t steps, and the exact influence
function at θ_t) and gives, per measurement m_q = f(x_q) on a test point, the Pearson correlation
over training examples of the two predicted changes and the share of ∇m_q in the null space of
the curvature. The influence function uses the GGN (= Hessian up to the residual term) either
without damping (the pseudo-inverse of Theorem 2) or with the training-time damping
λ = (1 − μ)/Σ_t η_t (PAPER §4.3). The correlation is the same for m = f(x_q), |f(x_q) − y_q|
and the squared error: their gradients differ by a factor per measurement.

    python examples/reproduce_fig3.py            # docs/results/fig3.{md,json,png}
    python examples/reproduce_fig3.py --decay    # η × 0.3 every steps/4 steps: docs/results/fig3-decay.*
    python examples/reproduce_fig3.py --quick    # seconds (CI; a temporary folder)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DAMPINGS = {"pseudo-inverse": 0.0, "training-time": "training-time"}


def config(lr: float, steps: int, seeds: int, measurements: int) -> dict:
    """The setting at learning rate ``lr`` as a dtda config dict."""
    return {"data": {"source": "sklearn:diabetes", "split_seed": 0},
            "model": {"name": "mlp:16,16", "activation": "relu"},
            "train": {"seeds": seeds, "lr": lr, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 32,
                      "steps": steps, "checkpoint_every": max(1, steps // 200), "dtype": "float64"},
            "measure": {"kind": "output", "test": measurements}}


def checkpoints(steps: int, count: int) -> list[int]:
    """``count`` roughly log-spaced steps in [steps/100, steps], on the checkpoint grid."""
    every = max(1, steps // 200)
    raw = [steps * 10 ** (2 * (i / (count - 1) - 1)) for i in range(count)]
    return sorted({max(every, round(t / every) * every) for t in raw})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 100 steps, 2 measurements: seconds, for CI")
    ap.add_argument("--out", help="folder for fig3.md/.json/.png (default docs/results; --quick: a temp folder)")
    ap.add_argument("--lrs", type=float, nargs=2, default=[0.03, 0.003], help="the two learning rates")
    ap.add_argument("--seeds", type=int, help="seeds per learning rate (default 4; --quick 2)")
    ap.add_argument("--steps", type=int, help="training steps (default 2000; --quick 100)")
    ap.add_argument("--decay", action="store_true",
                    help="multiply η by 0.3 every steps/4 steps (a decaying schedule, as Theorem 2's A2 asks); "
                         "writes fig3-decay.*")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import dtda
    from dtda import config as cfgmod
    from dtda.pipeline import Plan

    seeds = args.seeds or (2 if args.quick else 4)
    steps = args.steps or (100 if args.quick else 2000)
    Q = 2 if args.quick else 8
    at = checkpoints(steps, 3 if args.quick else 8)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="fig3-")) if args.quick
                                           else ROOT / "docs" / "results")
    t0 = time.perf_counter()
    rows, final_mse = [], {}
    for lr in args.lrs:
        plan = Plan.build(cfgmod.validate(config(lr, steps, seeds, Q), source=f"fig3 lr={lr}"))
        recipe = dataclasses.replace(plan.recipe, schedule=("step", steps // 4, 0.3)) if args.decay else plan.recipe
        ensemble = dtda.train_ensemble(recipe, (plan.data.X_train, plan.data.y_train), seeds)
        with torch.no_grad():
            final_mse[str(lr)] = statistics.mean(float(recipe.loss_fn(ensemble.model(i)(ensemble.data.X),
                                                                      ensemble.data.y).mean())
                                                 for i in range(seeds))
        for i, (label, damping) in enumerate(DAMPINGS.items()):
            # the null-space share does not depend on the damping: computed with the first only
            diag = dtda.attribute.diagnose(ensemble, plan.measurement(), method="exact", damping=damping, steps=at,
                                           null_space=i == 0)
            rows += [{**r, "lr": lr, "damping": label} for r in diag.rows]
            print(f"fig3: lr {lr}, IF {label}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    wall = time.perf_counter() - t0
    summary = _summary(rows, args.lrs)
    result = {"quick": args.quick, "decay": args.decay, "seeds": seeds, "steps": steps, "checkpoints": at,
              "measurements": Q, "lrs": args.lrs, "wall_s": round(wall, 1), "final_train_mse": final_mse,
              "summary": summary, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    name = "fig3-decay" if args.decay else "fig3"
    (out / f"{name}.json").write_text(json.dumps(result) + "\n")  # compact: 1000+ rows
    (out / f"{name}.md").write_text(_markdown(result) + "\n")
    _figure(out / f"{name}.png", summary, args.lrs)
    print(f"fig3: {wall:.0f} s; {out / name}.md", file=sys.stderr)
    return 0


def _summary(rows: list[dict], lrs) -> list[dict]:
    """One row per (lr, step): for each damping the correlation (median over measurements per seed,
    then mean, min and max over seeds), and the null-space share (same reduction, mean over seeds)."""
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault((r["lr"], r["step"]), []).append(r)
    out = []
    for (lr, step), rs in sorted(by.items(), key=lambda kv: (lrs.index(kv[0][0]), kv[0][1])):
        row = {"lr": lr, "step": step}
        for label in DAMPINGS:
            corr = _per_seed(rs, label, "correlation")
            row[label] = {"mean": sum(corr) / len(corr), "min": min(corr), "max": max(corr)}
        share = _per_seed(rs, next(iter(DAMPINGS)), "null_share")
        row["null_share"] = sum(share) / len(share)
        out.append(row)
    return out


def _per_seed(rows: list[dict], damping: str, key: str) -> list[float]:
    """The median over measurements of ``key``, one value per seed."""
    seeds: dict[int, list[float]] = {}
    for r in rows:
        if r["damping"] == damping:
            seeds.setdefault(r["seed"], []).append(r[key])
    return [statistics.median(v) for v in seeds.values()]


def _markdown(result: dict) -> str:
    schedule = f"η × 0.3 every {result['steps'] // 4} steps" if result["decay"] else "constant η"
    lines = ["# Fig. 3 (PAPER §4.1, §9 E2): unrolling against the influence function along training", "",
             f"diabetes (353 train), MLP 10-16-16-1 ReLU, mse, SGD momentum 0.9, batch 32, {result['steps']} "
             f"steps, {schedule}, "
             f"float64; {result['seeds']} seeds per learning rate, {result['measurements']} measurements "
             f"f(x_q); wall time {result['wall_s']} s.", "",
             "Correlation: Pearson over training examples of the unrolled and the IF-predicted change, the "
             "median over measurements per seed, then the mean [min, max] over seeds; the IF with the "
             "training-time damping (1 − μ)/Σ_t η_t or the pseudo-inverse. Null share: "
             "1 − ‖P_span(H)∇m‖²/‖∇m‖² for the GGN H at θ_t (median over measurements, mean over seeds).",
             "",
             "| lr | step | final train mse | corr, training-time damping | corr, pseudo-inverse | null share |",
             "|---|---|---|---|---|---|"]
    for s in result["summary"]:
        cells = [f"{s[d]['mean']:.3f} [{s[d]['min']:.3f}, {s[d]['max']:.3f}]" for d in DAMPINGS]
        loss = result["final_train_mse"][str(s["lr"])]
        lines.append(f"| {s['lr']:g} | {s['step']} | {loss:.3f} | {cells[1]} | {cells[0]} | {s['null_share']:.2e} |")
    return "\n".join(lines)


def _figure(path: Path, summary: list[dict], lrs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True, height_ratios=(2, 1))
    for lr, colour in zip(lrs, ("tab:red", "tab:blue")):
        pts = [s for s in summary if s["lr"] == lr]
        x = [s["step"] for s in pts]
        for label, style in zip(DAMPINGS, (":", "-")):
            top.plot(x, [s[label]["mean"] for s in pts], style, marker="o", color=colour,
                     label=f"lr {lr:g}, IF {label}")
            top.fill_between(x, [s[label]["min"] for s in pts], [s[label]["max"] for s in pts], color=colour,
                             alpha=0.15)
        bottom.plot(x, [s["null_share"] for s in pts], marker="o", color=colour, label=f"lr {lr:g}")
    top.set_ylabel("corr(unrolled, IF) over examples")
    top.set_ylim(-0.2, 1.02)
    top.legend(fontsize="small")
    bottom.set_ylabel("share of ∇m in null(GGN)")
    bottom.set_xlabel("training step t")
    bottom.set_xscale("log")
    bottom.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
