"""Pruning by attribution (PAPER §8.5, the paper's Fig. 6, scaled down to digits), checked by retraining.

The demo's setting (``dtda.demo.config()``: sklearn digits, MLP 64-128-128-10, SGD momentum 0.9,
lr 0.03, weight decay 1e-3, batch 64, 10 epochs) with 32 seeds. The demo's 360 held-out digits are
split in half: a validation set, whose mean cross-entropy is the measurement m attributed by
reverse unrolling, and a test set. For each pruning size n it removes the n examples predicted to
lower the validation loss most, chosen

- **per seed** (fixed-seed TDA): the n most negative δ_s(k), a different set for every seed;
- **seed-averaged** (d-TDA's mean shift): the n most negative δ̄(k);
- **distributional**: the n most negative predicted changes of mean + sd of the validation loss
  over seeds (an upper one-sigma bound: examples whose removal also narrows the bad tail);
- **random**: n examples drawn at random (baseline),

retrains every seed from scratch without them (subset mode, the same seed streams) and compares
the distributions over seeds of test accuracy and test loss with the full-data runs.

    python examples/reproduce_pruning.py           # 32 seeds (docs/results/pruning.*)
    python examples/reproduce_pruning.py --quick   # 4 seeds, 300 images (CI; a temp folder)

Writes ``pruning.md``, ``pruning.json`` and ``pruning.png`` under ``--out`` and prints the wall time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("validation loss", "test loss", "test accuracy")


@dataclass
class Metrics:
    """Validation loss, test loss and test accuracy of a model (picklable; Q = 3, or 1 with
    ``loss_only``: the validation loss, a differentiable measurement for unrolling)."""

    X_val: Tensor
    y_val: Tensor
    X_test: Tensor
    y_test: Tensor
    loss_only: bool = False

    def __call__(self, model: nn.Module) -> Tensor:
        val = nn.functional.cross_entropy(model(self.X_val), self.y_val).reshape(1)
        if self.loss_only:
            return val
        z = model(self.X_test)
        test = nn.functional.cross_entropy(z, self.y_test).reshape(1)
        accuracy = (z.argmax(1) == self.y_test).to(z.dtype).mean().reshape(1)
        return torch.cat([val, test, accuracy])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 seeds, 300 images, 2 epochs: seconds, for CI")
    ap.add_argument("--out", help="output folder (default docs/results; --quick: a temp folder)")
    ap.add_argument("--seeds", type=int, help="seeds (32; --quick 4)")
    ap.add_argument("--fractions", default=None, help="pruned fractions of the training set (0.01,0.02,0.05,0.1,0.2; --quick 0.1)")
    ap.add_argument("--cache", help="retrain cache folder (default: <out>/pruning-retrain)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    import dtda
    from dtda import config as cfgmod
    from dtda import demo, measure
    from dtda.evaluate import retrain_measurements
    from dtda.pipeline import Plan

    t0 = time.perf_counter()
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="pruning-")) if args.quick
                                           else ROOT / "docs" / "results")
    seeds = list(range(args.seeds or (4 if args.quick else 32)))
    fractions = [float(f) for f in (args.fractions or ("0.1" if args.quick else "0.01,0.02,0.05,0.1,0.2")).split(",")]
    plan = Plan.build(cfgmod.validate(demo.config(quick=args.quick), source="pruning config"))
    recipe, train = plan.recipe, (plan.data.X_train, plan.data.y_train)
    held = torch.randperm(len(plan.data.X_test), generator=torch.Generator().manual_seed(0))
    val, test = held[: len(held) // 2], held[len(held) // 2:]
    X_held, y_held = plan.data.X_test.to(recipe.dtype), plan.data.y_test.long()
    metrics = Metrics(X_held[val], y_held[val], X_held[test], y_held[test])
    val_loss = measure.custom(replace(metrics, loss_only=True), names=["validation loss"])

    ensemble = dtda.train_ensemble(recipe, train, seeds)
    samples = dtda.attribute.unroll(ensemble, val_loss)           # δ [K, N, 1]
    t_attr = time.perf_counter() - t0
    delta = samples.delta[:, :, 0].double()                        # [K, N]
    m = samples.m[:, 0].double()
    mean_shift = delta.mean(0)
    sd_shift = (m[:, None] + delta).std(0) - m.std()
    N = delta.shape[1]

    run = dict(cache=Path(args.cache) if args.cache else out / "pruning-retrain")
    full = retrain_measurements(recipe, train, metrics, [[]], seeds, "subset", **run)[0]          # [K, 3]
    results = {"full data": {"removed": 0, "values": full}}
    permutation = torch.randperm(N, generator=torch.Generator().manual_seed(1))  # nested random sets
    for frac in fractions:
        n = int(round(frac * N))
        shared = {"random": permutation[:n], "seed-averaged": mean_shift.argsort()[:n],
                  "distributional": (mean_shift + sd_shift).argsort()[:n]}
        for name, idx in shared.items():
            got = retrain_measurements(recipe, train, metrics, [idx.tolist()], seeds, "subset", **run)[0]
            results[f"{name} {frac:g}"] = _entry(n, got, delta[:, idx].sum(1), idx)
        per_seed = [delta[k].argsort()[:n] for k in range(len(seeds))]
        got = torch.cat([retrain_measurements(recipe, train, metrics, [idx.tolist()], [s], "subset", **run)[0]
                         for s, idx in zip(seeds, per_seed)])
        predicted = torch.stack([delta[k, idx].sum() for k, idx in enumerate(per_seed)])
        overlap = sum(len(set(a.tolist()) & set(shared["seed-averaged"].tolist())) for a in per_seed) / (n * len(seeds))
        results[f"per seed {frac:g}"] = {**_entry(n, got, predicted, None), "overlap_with_seed_averaged": overlap}
    wall = time.perf_counter() - t0

    table = {name: _summary(r["values"], full) for name, r in results.items()}
    result = {"quick": args.quick, "seeds": seeds, "N": N, "validation": len(val), "test": len(test),
              "fractions": fractions, "wall_s": round(wall, 1), "attribution_s": round(t_attr, 1),
              "strategies": {name: {**{k: v for k, v in r.items() if k != "values"}, "summary": table[name],
                                    "values": r["values"].tolist()} for name, r in results.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "pruning.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "pruning.md").write_text(_markdown(result) + "\n")
    _figure(out / "pruning.png", result)
    print(f"pruning: {len(seeds)} seeds, fractions {fractions}, {wall:.0f} s ({out / 'pruning.md'})", file=sys.stderr)
    return 0


def _entry(n: int, values: Tensor, predicted: Tensor, idx) -> dict:
    """A strategy's retrained metrics [K, 3], its predicted change of the validation loss per seed."""
    return {"removed": n, "values": values.double(), "predicted_val_change": float(predicted.mean()),
            "indices": None if idx is None else sorted(idx.tolist())}


def _boot(x: Tensor, fn, B: int = 2000) -> list[float]:
    """95% percentile bootstrap interval of fn over the seeds (rows of x)."""
    idx = torch.randint(0, x.shape[0], (B, x.shape[0]), generator=torch.Generator().manual_seed(0))
    values = torch.stack([fn(x[i]) for i in idx])
    return torch.quantile(values, torch.tensor([0.025, 0.975], dtype=values.dtype)).tolist()


def _summary(values: Tensor, full: Tensor) -> dict:
    """Per metric: mean [CI], sd, 10/50/90% quantiles and the paired difference to full data [CI]."""
    values, full = values.double(), full.double()
    out = {}
    for j, name in enumerate(METRICS):
        v, d = values[:, j], values[:, j] - full[:, j]
        q = torch.quantile(v, torch.tensor([0.1, 0.5, 0.9], dtype=v.dtype)).tolist()
        out[name] = {"mean": float(v.mean()), "mean_ci": _boot(v, torch.mean), "sd": float(v.std()),
                     "q10": q[0], "median": q[1], "q90": q[2], "diff": float(d.mean()), "diff_ci": _boot(d, torch.mean)}
    return out


def _markdown(r: dict) -> str:
    lines = [f"# Pruning on digits ({len(r['seeds'])} seeds, subset retraining)", "",
             f"N = {r['N']} training images; validation {r['validation']} (the attributed measurement: mean "
             f"cross-entropy), test {r['test']}. Wall time {r['wall_s']} s (training and reverse unrolling "
             f"{r['attribution_s']} s). Intervals: 95% seed bootstrap; 'vs full' is the paired difference on "
             "the same seeds.", "",
             "| strategy | removed | metric | mean [CI] | sd | q10 / median / q90 | vs full [CI] |",
             "|---|---|---|---|---|---|---|"]
    for name, s in r["strategies"].items():
        for metric in ("test accuracy", "test loss", "validation loss"):
            v = s["summary"][metric]
            lines.append(f"| {name} | {s['removed']} | {metric} | {v['mean']:.4f} [{v['mean_ci'][0]:.4f}, "
                         f"{v['mean_ci'][1]:.4f}] | {v['sd']:.4f} | {v['q10']:.4f} / {v['median']:.4f} / {v['q90']:.4f} "
                         f"| {v['diff']:+.4f} [{v['diff_ci'][0]:+.4f}, {v['diff_ci'][1]:+.4f}] |")
    lines += ["", "Predicted (Σ δ over the removed examples, mean over seeds) against actual change of the "
              "validation loss:", ""]
    for name, s in r["strategies"].items():
        if "predicted_val_change" in s:
            extra = (f"; per-seed sets share {s['overlap_with_seed_averaged']:.0%} of their examples with the "
                     "seed-averaged set") if "overlap_with_seed_averaged" in s else ""
            lines.append(f"- {name}: predicted {s['predicted_val_change']:+.4f}, actual "
                         f"{s['summary']['validation loss']['diff']:+.4f}{extra}")
    return "\n".join(lines)


def _figure(path: Path, r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["strategies"])
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 0.8 * len(names)), 8))
    for ax, (j, metric) in zip(axes, ((2, "test accuracy"), (1, "test loss"))):
        data = [[row[j] for row in r["strategies"][n]["values"]] for n in names]
        ax.boxplot(data, showmeans=True)
        for i, d in enumerate(data, start=1):
            ax.scatter([i + 0.12] * len(d), d, s=6, color="k", alpha=0.4)
        ax.axhline(sum(data[0]) / len(data[0]), color="grey", lw=0.8, ls=":")
        ax.set_xticks(range(1, len(names) + 1), names, rotation=25, ha="right", fontsize=8)
        ax.set_title(f"{metric} over {len(r['seeds'])} seeds (subset retraining)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
