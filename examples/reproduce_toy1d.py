"""Reproduce PAPER §9 E3 (the paper's Fig. 5) at CPU scale, and check it by retraining.

The 1-D toy regression (``examples/toy1d.toml``: N = 40 points of y = sin x + noise with a gap
in (−1, 1); MLP 1-64-64-1 tanh; SGD momentum 0.9, lr 0.01, batch 8, 1000 steps; m = f(0), in the
gap). Finding to reproduce: the example that moves the mean of f(0) most is not the one that
moves its distribution most in W2 (a small mean shift with a large change of spread). Then
``dtda.evaluate.confirm`` retrains without each of the two on the same seeds (subset mode, and
masked mode) and reports predicted against actual mean shift, variance increase and W2.

    python examples/reproduce_toy1d.py            # 64 seeds (docs/results/toy1d.*)
    python examples/reproduce_toy1d.py --quick    # 12 seeds, 300 steps (CI; a temporary folder)

Writes ``toy1d.md``, ``toy1d.json`` and ``toy1d.png`` under ``--out`` (default docs/results, or
a temporary folder with --quick) and the run directory under ``--run``.
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12 seeds and 300 steps: seconds, for CI")
    ap.add_argument("--out", help="folder for toy1d.md/.json/.png (default docs/results; --quick: a temp folder)")
    ap.add_argument("--run", help="run directory (default: <out>/toy1d-run)")
    ap.add_argument("--seeds", type=int, help="override the number of seeds (64; --quick 12)")
    ap.add_argument("--steps", type=int, help="override the training steps (1000; --quick 300)")
    ap.add_argument("--workers", type=int, default=1, help="processes for training and retraining")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in this process (1: tiny models gain nothing from more, and shared "
                         "cores lose a lot)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from dtda import config as cfgmod
    from dtda.evaluate import confirm
    from dtda.pipeline import Plan, Run, read_samples

    t0 = time.perf_counter()
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="toy1d-")) if args.quick
                                           else ROOT / "docs" / "results")
    config = cfgmod.load(ROOT / "examples" / "toy1d.toml")
    config["statistics"]["bootstrap"] = 500
    config["execution"].update(executor="process" if args.workers > 1 else "local", workers=args.workers)
    if args.quick:
        config["train"].update(seeds=12, steps=300)
    config["train"].update({k: v for k, v in (("seeds", args.seeds), ("steps", args.steps)) if v})
    run = Run.create(config, args.run or out / "toy1d-run", quiet=True)
    run.all()
    samples = read_samples(run.dir.samples_path)
    plan = Plan.build(run.config)
    x = plan.data.X_train[:, 0]
    stats = samples.distributional(bootstrap=0)
    by_mean = int(stats.top(1, by="abs_mean", query=0).indices[0])
    by_w2 = int(stats.top(1, by="w2", query=0).indices[0])
    # The report's "spread without mean shift": the largest |variance increase| among the examples
    # whose |mean shift| is at most the median.
    small = stats.mean[:, 0].abs() <= stats.mean[:, 0].abs().median()
    by_spread = int(torch.where(small, stats.var_increase[:, 0].abs(), torch.zeros_like(small, dtype=stats.mean.dtype))
                    .argmax())
    chosen = list(dict.fromkeys([by_mean, by_w2, by_spread]))
    common = dict(samples=samples, recipe=plan.recipe, train=(plan.data.X_train, plan.data.y_train),
                  measure=plan.measurement(), examples=chosen, each=True, cache=run.dir.path / "retrain",
                  executor=run._executor())
    checks = {mode: confirm(**common, mode=mode, controls=["tiny", "random"] if mode == "masked" else ["random"])
              for mode in ("subset", "masked")}
    wall = time.perf_counter() - t0

    result = {"quick": args.quick, "seeds": samples.K, "steps": run.config["train"]["steps"], "wall_s": round(wall, 1),
              "top_by_abs_mean": {"example": by_mean, "x": float(x[by_mean])},
              "top_by_w2": {"example": by_w2, "x": float(x[by_w2])},
              "spread_without_mean": {"example": by_spread, "x": float(x[by_spread])},
              "different": by_mean != by_w2,
              "ranks": {f"#{k}": {s: int((stats.get(s)[:, 0].abs() > stats.get(s)[k, 0].abs()).sum()) + 1
                                   for s in ("mean", "w2", "var_increase")} for k in chosen},
              "confirm": {mode: c.to_dict() for mode, c in checks.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "toy1d.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "toy1d.md").write_text(_markdown(result, checks, x) + "\n")
    _figure(out / "toy1d.png", samples, stats, plan, chosen, checks["subset"])
    print(f"toy1d: top by |mean shift| #{by_mean} (x = {float(x[by_mean]):+.2f}), top by W2 #{by_w2} "
          f"(x = {float(x[by_w2]):+.2f}), spread without mean #{by_spread} (x = {float(x[by_spread]):+.2f}); "
          f"{wall:.0f} s; {out / 'toy1d.md'}", file=sys.stderr)
    for mode, c in checks.items():
        print(f"[{mode}]\n{c}", file=sys.stderr)
    return 0


def _markdown(result: dict, checks: dict, x) -> str:
    lines = [f"# toy1d (PAPER §9 E3): mean and W2 pick different points{'' if result['different'] else ' (not here)'}",
             "", f"Top by |mean shift| #{result['top_by_abs_mean']['example']}, top by W2 "
             f"#{result['top_by_w2']['example']}, spread without mean shift #{result['spread_without_mean']['example']}.",
             "", f"{result['seeds']} seeds, {result['steps']} steps; wall time {result['wall_s']} s (train, unroll, "
             "statistics, report, and both checks; 2 shared cores).", "",
             "| example | x | rank by abs. mean shift | rank by W2 | rank by abs. variance increase |", "|---|---|---|---|---|"]
    for k, r in result["ranks"].items():
        lines.append(f"| {k} | {float(x[int(k[1:])]):+.2f} | {r['mean']} | {r['w2']} | {r['var_increase']} |")
    for mode, c in checks.items():
        lines += ["", f"## Retrained ({mode} mode, {len(c.actual.seeds)} seeds)", "",
                  "| example | statistic | predicted [CI] | actual [CI] | floor | verdict |", "|---|---|---|---|---|---|"]
        for row in c.rows():
            for s in ("mean", "var_increase", "w2"):
                v = row[s]
                lines.append(f"| #{row['examples'][0]} | {s} | {_ci(v['predicted'], v['predicted_ci'])} | "
                             f"{_ci(v['actual'], v['actual_ci'])} | {v['floor']:.3g} | {v['verdict']} |")
            if "per_seed_corr" in row:
                lines.append(f"| #{row['examples'][0]} | per-seed r (masked) | {row['per_seed_corr']:.3f} | | | |")
    return "\n".join(lines)


def _ci(v, ci) -> str:
    return f"{v:+.3g}" + (f" [{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else "")


def _figure(path: Path, samples, stats, plan, chosen, check) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = plan.data.X_train[:, 0].numpy(), plan.data.y_train.numpy()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, s, title in ((axes[0], "mean", "mean shift of f(0)"), (axes[1], "w2", "W2 of f(0)")):
        v = stats.get(s)[:, 0].numpy()
        sc = ax.scatter(x, y, c=v, cmap="coolwarm" if s == "mean" else "viridis", s=30)
        for k in chosen:
            ax.scatter([x[k]], [y[k]], s=140, facecolors="none", edgecolors="k")
        fig.colorbar(sc, ax=ax)
        ax.set_title(f"removal effect: {title}", fontsize=10)
        ax.set_xlabel("x")
    ax = axes[2]
    before = samples.m[:, 0].numpy()
    data, labels = [before], ["before"]
    for g, k in enumerate(chosen):
        data += [(check.predicted.m[:, 0] + check.predicted.delta[:, g, 0]).numpy(),
                 (check.actual.m[:, 0] + check.actual.delta[:, g, 0]).numpy()]
        labels += [f"−#{k} predicted", f"−#{k} retrained"]
    ax.violinplot(data, showmedians=True)
    ax.set_xticks(range(1, len(data) + 1), labels, fontsize=7, rotation=20)
    ax.set_title("f(0) over seeds (subset retraining)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
