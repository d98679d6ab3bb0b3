"""Reproduce PAPER §9 E3 (the paper's Fig. 5) at CPU scale, and check it by retraining.

The 1-D toy regression (``examples/toy1d.toml``, PAPER §9 ``toy1d``: N = 40 points of
y = sin x + 0.1 ε with x ~ U([−4,−1] ∪ [1,4]); MLP 1-64-64-1 tanh; SGD momentum 0.9, lr 0.01,
batch 8, 1000 steps; 64 seeds; m = f(0), in the gap). Finding to reproduce: the example that
moves the mean of f(0) most is not the one that moves its distribution most in W2 (a small mean
shift with a large change of spread). The script ranks every example by |mean shift|, W2 and
|variance increase|, and checks with ``dtda.evaluate.confirm`` (each example alone, subset and
masked retraining on the same seeds, with null controls) the top example by |mean shift|, the
top by W2, the report's "spread without mean shift" example (the largest |variance increase|
among the examples with at most the median |mean shift|) and the top by shape W2, the part of W2
that the mean shift does not explain (W2² = mean shift² + shape W2²).

    python examples/reproduce_toy1d.py            # 64 seeds, 1000 steps (docs/results/toy1d.*)
    python examples/reproduce_toy1d.py --quick    # 6 seeds, 200 steps (CI; a temporary folder)

Writes ``toy1d.md``, ``toy1d.json`` and ``toy1d.png`` under ``--out`` (default docs/results, or
a temporary folder with --quick). The run directory (``--run``, default runs/toy1d-SxT) keeps the
trained members and the retraining cache, so a second call reuses them.
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
RANKED = ("mean", "w2", "var_increase", "shape_w2", "w2_smoothed")
CRITERIA = {"top_by_abs_mean": "top by |mean shift|", "top_by_w2": "top by W2",
            "spread_without_mean": "spread without mean shift", "top_by_shape_w2": "top by shape W2"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 seeds and 200 steps: seconds, for CI")
    ap.add_argument("--out", help="folder for toy1d.md/.json/.png (default docs/results; --quick: a temp folder)")
    ap.add_argument("--run", help="run directory (default runs/toy1d-<seeds>x<steps>; --quick: inside --out)")
    ap.add_argument("--seeds", type=int, help="override the number of seeds (64; --quick 6)")
    ap.add_argument("--steps", type=int, help="override the training steps (1000; --quick 200)")
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
        config["train"].update(seeds=6, steps=200)
    config["train"].update({k: v for k, v in (("seeds", args.seeds), ("steps", args.steps)) if v})
    seeds, steps = config["train"]["seeds"], config["train"]["steps"]
    run_dir = args.run or (out / "toy1d-run" if args.quick else ROOT / "runs" / f"toy1d-{seeds}x{steps}")
    run = Run.create(config, run_dir, quiet=True)
    run.all()
    samples = read_samples(run.dir.samples_path)
    plan = Plan.build(run.config)
    x = plan.data.X_train[:, 0]
    stats = samples.distributional(bootstrap=0)
    picks = _candidates(stats)
    chosen = list(dict.fromkeys(picks.values()))
    cached_before = _cached(run.dir.path / "retrain")
    common = dict(samples=samples, recipe=plan.recipe, train=(plan.data.X_train, plan.data.y_train),
                  measure=plan.measurement(), examples=chosen, each=True, cache=run.dir.path / "retrain",
                  executor=run.executor(), group_size=run.config["execution"]["seeds_per_group"] or None)
    checks = {mode: confirm(**common, mode=mode, controls=["tiny", "random"] if mode == "masked" else ["random"])
              for mode in ("subset", "masked")}
    wall = time.perf_counter() - t0

    ranks = {k: _ranks(stats, k) for k in range(samples.N)}
    result = {"quick": args.quick, "seeds": samples.K, "steps": steps, "wall_s": round(wall, 1),
              "retrainings": {"already_cached": cached_before, "total": _cached(run.dir.path / "retrain")},
              **{name: {"example": k, "x": float(x[k])} for name, k in picks.items()},
              "different": picks["top_by_abs_mean"] != picks["top_by_w2"],
              "values": {f"#{k}": {s: float(stats.get(s)[k, 0]) for s in RANKED} for k in range(samples.N)},
              "ranks": {f"#{k}": r for k, r in ranks.items()},
              "confirm": {mode: c.to_dict() for mode, c in checks.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "toy1d.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "toy1d.md").write_text(_markdown(result, checks, stats, x, picks) + "\n")
    _figure(out / "toy1d.png", samples, stats, plan, picks, checks)
    print(f"toy1d: " + ", ".join(f"{CRITERIA[n]} #{k} (x = {float(x[k]):+.2f})" for n, k in picks.items())
          + f"; {wall:.0f} s; {out / 'toy1d.md'}", file=sys.stderr)
    for mode, c in checks.items():
        print(f"[{mode}]\n{c}", file=sys.stderr)
    return 0


def _cached(folder: Path) -> int:
    """Retrainings stored in a retraining cache folder (one file each)."""
    return len(list(folder.rglob("*.safetensors")))


def _candidates(stats) -> dict[str, int]:
    """The examples each criterion puts first, for the single measurement f(0)."""
    mean = stats.mean[:, 0].abs()
    small = mean <= mean.median()
    spread = torch.where(small, stats.var_increase[:, 0].abs(), torch.zeros_like(mean))
    return {"top_by_abs_mean": int(stats.top(1, by="abs_mean", query=0).indices[0]),
            "top_by_w2": int(stats.top(1, by="w2", query=0).indices[0]),
            "spread_without_mean": int(spread.argmax()),
            "top_by_shape_w2": int(stats.top(1, by="shape_w2", query=0).indices[0])}


def _ranks(stats, k: int) -> dict[str, int]:
    """Example k's rank (1 = largest) by the absolute value of each statistic in ``RANKED``."""
    return {s: int((stats.get(s)[:, 0].abs() > stats.get(s)[k, 0].abs()).sum()) + 1 for s in RANKED}


def _markdown(result: dict, checks: dict, stats, x, picks: dict[str, int]) -> str:
    named = ", ".join(f"{CRITERIA[n]} #{k}" for n, k in picks.items())
    verdict = "different points" if result["different"] else "the same point"
    lines = [f"# toy1d (PAPER §9 E3): mean and W2 pick {verdict}",
             "", f"{named}.", "",
             f"{result['seeds']} seeds, {result['steps']} steps; wall time {result['wall_s']} s (train, unroll, "
             f"statistics, report and both checks); {result['retrainings']['already_cached']} of the "
             f"{result['retrainings']['total']} retrainings in the cache were there before this call.",
             "", "## The ten examples with the largest W2 (and the chosen ones)", "",
             "| example | x | mean shift | W2 | shape W2 | W2 smoothed | variance increase | rank by abs. mean shift "
             "| rank by W2 | rank by abs. variance increase | rank by shape W2 |", "|---" * 11 + "|"]
    shown = list(dict.fromkeys(stats.top(10, by="w2", query=0).indices.tolist() + list(picks.values())))
    for k in shown:
        v, r = result["values"][f"#{k}"], result["ranks"][f"#{k}"]
        lines.append(f"| #{k} | {float(x[k]):+.2f} | {v['mean']:+.4f} | {v['w2']:.4f} | {v['shape_w2']:.4f} | "
                     f"{v['w2_smoothed']:.4f} | {v['var_increase']:+.2e} | {r['mean']} | {r['w2']} | "
                     f"{r['var_increase']} | {r['shape_w2']} |")
    for mode, c in checks.items():
        lines += ["", f"## Retrained ({mode} mode, {len(c.actual.seeds)} seeds)", "",
                  "| example | statistic | predicted [CI] | actual [CI] | floor | verdict |", "|---" * 6 + "|"]
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


def _figure(path: Path, samples, stats, plan, picks: dict[str, int], checks: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = list(dict.fromkeys(picks.values()))
    x, y = plan.data.X_train[:, 0].numpy(), plan.data.y_train.numpy()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    for ax, s, title in ((axes[0, 0], "mean", "mean shift of f(0)"), (axes[0, 1], "w2", "W2 of f(0)")):
        sc = ax.scatter(x, y, c=stats.get(s)[:, 0].numpy(), cmap="coolwarm" if s == "mean" else "viridis", s=30)
        for k in chosen:
            ax.scatter([x[k]], [y[k]], s=140, facecolors="none", edgecolors="k")
            ax.annotate(f"#{k}", (x[k], y[k]), textcoords="offset points", xytext=(6, 6), fontsize=8)
        fig.colorbar(sc, ax=ax)
        ax.set_title(f"removal effect: {title}", fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    ax = axes[1, 0]  # above the diagonal, W2 holds more than the mean shift
    mean, w2 = stats.mean[:, 0].abs().numpy(), stats.w2[:, 0].numpy()
    ax.scatter(mean, w2, s=18, c="0.4", label="predicted, every example")
    for (mode, check), marker in zip(checks.items(), ("x", "+")):
        got = check.actual_stats
        ax.scatter(got.mean[:, 0].abs().numpy(), got.w2[:, 0].numpy(), marker=marker, s=60,
                   label=f"retrained ({mode}), chosen examples")
    lo = float(mean[mean > 0].min()) / 2
    hi = max([float(w2.max())] + [float(c.actual_stats.w2.max()) for c in checks.values()]) * 1.5
    ax.plot([lo, hi], [lo, hi], "k:", lw=1, label="W2 = |mean shift|")
    for k in chosen:
        ax.annotate(f"#{k}", (mean[k], w2[k]), textcoords="offset points", xytext=(5, -10), fontsize=8)
    for g, k in enumerate(checks["subset"].groups):
        got = checks["subset"].actual_stats
        ax.annotate(f"#{k[0]}", (float(got.mean[g, 0].abs()), float(got.w2[g, 0])), textcoords="offset points",
                    xytext=(5, -10), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel("|mean shift|")
    ax.set_ylabel("W2")
    ax.set_title("W2 against |mean shift| of f(0)", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    data, labels = [samples.m[:, 0].numpy()], ["before"]
    check = checks["subset"]
    for g, k in enumerate(chosen):
        data += [(check.predicted.m[:, 0] + check.predicted.delta[:, g, 0]).numpy(),
                 (check.actual.m[:, 0] + check.actual.delta[:, g, 0]).numpy()]
        labels += [f"−#{k} pred.", f"−#{k} retrained"]
    ax.violinplot(data, showmedians=True)
    ax.set_xticks(range(1, len(data) + 1), labels, fontsize=7, rotation=25)
    ax.set_title("f(0) over seeds (subset retraining)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
