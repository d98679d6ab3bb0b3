"""How good are the predictions? Linearised m_s + δ_s(G), non-linear m(θ_s + Δθ_s(G)) and
second-order m_s + δ_s(G) + ½δ²_s(G) against masked and subset retraining, for single examples
and small groups (issue 10, PAPER §3, §7, §8.1; :mod:`dtda.evaluate.predict`).

Settings: ``digits`` (the demo's data, model and optimiser; fewer seeds and epochs, see --help),
``diabetes`` (a regression MLP, m = test outputs; the configuration of examples/reproduce_lds_table.py)
and ``toy1d`` (PAPER §9's 1-D regression, m = f at x = −1, 0, 1). Groups: the two examples with
the largest |δ̄| on the first measurement, the top 5 by |δ̄|, and 5 random examples. For each
(predictor, target) pair, over groups and measurements:

- mean-shift error: median over (group, q) of |δ̄_pred − δ̄_actual| / |δ̄_actual|;
- per-seed error (masked target only): median of rms_s(pred_s − actual_s) / rms_s(actual_s);
- variance-increase ratio: median of actual / predicted variance increase.

Each setting also records the wall time of the three predictions (one forward-over-forward sweep
per member), of the first-order forward sweep alone, and of the retraining.

    python examples/prediction_quality.py                 # writes docs/results/prediction_quality.*
    python examples/prediction_quality.py --quick         # seconds (a temporary folder)
    python examples/prediction_quality.py --settings toy1d --stem prediction_quality_toy1d
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def setting(name: str, quick: bool):
    """(recipe, train, measure, seeds) of a setting."""
    from dtda import config as cfgmod
    from dtda import demo
    from dtda.pipeline import Plan

    if name == "digits":
        cfg = demo.config(quick=quick)
        if not quick:
            cfg["train"].update(epochs=4)  # the demo's 10 epochs do not fit a shared 2-core budget
        cfg["measure"]["test"] = 4
    elif name == "diabetes":
        sys.path.insert(0, str(ROOT / "examples"))
        from reproduce_lds_table import dataset_config

        cfg = dataset_config("diabetes", quick)
        cfg["measure"]["test"] = 4
    else:
        cfg = cfgmod.load(ROOT / "examples" / "toy1d.toml")
        cfg["measure"]["test"] = [8, 10, 12]
        if quick:
            cfg["train"]["steps"] = 200
    cfg = cfgmod.validate(cfg, source=name)
    plan = Plan.build(cfg)
    return plan.recipe, (plan.data.X_train, plan.data.y_train), plan.measurement(), (3 if quick else 4)


def measure_setting(name: str, quick: bool) -> dict:
    import dtda
    from dtda.evaluate import predictions, retrained_samples
    from dtda.stats.correlation import pearson

    t0 = time.perf_counter()
    recipe, train, measure, K = setting(name, quick)
    ens = dtda.train_ensemble(recipe, train, K)
    reverse = dtda.attribute.unroll(ens, measure)
    dbar = reverse.delta.mean(0)[:, 0].abs()
    top = dbar.argsort(descending=True).tolist()
    gen = torch.Generator().manual_seed(0)
    groups = [[top[0]], [top[1]], top[:5], sorted(torch.randperm(len(dbar), generator=gen)[:5].tolist())]
    labels = ["top-1 single", "top-2 single", "top-5 group", "random-5 group"]
    t1 = time.perf_counter()
    preds = predictions(ens, measure, groups)
    t2 = time.perf_counter()
    predictions(ens, measure, groups, second_order=False)
    t3 = time.perf_counter()
    actual = {mode: retrained_samples(reverse, recipe, train, measure, groups, mode=mode) for mode in ("masked", "subset")}
    t4 = time.perf_counter()
    out = {"K": K, "N": len(train[0]), "Q": reverse.Q, "groups": dict(zip(labels, groups)), "pairs": {},
           "seconds": {"predictions_all_three": round(t2 - t1, 2), "predictions_first_order_only": round(t3 - t2, 2),
                       "retraining_masked_and_subset": round(t4 - t3, 2),
                       "retrainings": 2 * len(groups) * K}}
    for kind, pred in preds.items():
        for mode, act in actual.items():
            pm, am = pred.delta.mean(0), act.delta.mean(0)                            # [G, Q]
            mean_err = ((pm - am).abs() / am.abs()).flatten()
            pv = pred.distributional(bootstrap=0, quantiles=()).var_increase
            av = act.distributional(bootstrap=0, quantiles=()).var_increase
            row = {"mean_shift_rel_error_median": float(mean_err.median()),
                   "mean_shift_rel_error_by_group": [float(v) for v in ((pm - am).abs() / am.abs()).median(1).values],
                   "var_increase_actual_over_predicted_median": float((av / pv).flatten().median())}
            if mode == "masked":
                rms = lambda t: t.square().mean(0).sqrt()  # noqa: E731
                rel = rms(pred.delta - act.delta) / rms(act.delta)                    # [G, Q]
                row["per_seed_rel_rms_error_median"] = float(rel.median())
                row["per_seed_rel_rms_error_by_group"] = [float(v) for v in rel.median(1).values]
                row["per_seed_corr_median"] = float(pearson(pred.delta, act.delta, 0).nanmedian())
            out["pairs"][f"{kind} vs {mode}"] = row
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--settings", default="digits,diabetes", help="comma-separated: digits, diabetes, toy1d")
    ap.add_argument("--stem", default="prediction_quality", help="name of the .md and .json written")
    ap.add_argument("--out", help="folder (default docs/results; --quick: a temporary folder)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="pq-")) if args.quick else ROOT / "docs" / "results")
    torch.set_num_threads(1)
    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    results = {}
    for name in args.settings.split(","):
        results[name] = measure_setting(name, args.quick)
        print(name, json.dumps(results[name], indent=1), file=sys.stderr)
    load = {"load_before": load_before, "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg())}
    out.mkdir(parents=True, exist_ok=True)
    from dtda.atomic import atomic_write_text

    atomic_write_text(out / f"{args.stem}.json",
                      json.dumps({"quick": args.quick, **load, **results}, indent=1) + "\n")
    lines = ["| setting | prediction vs retraining | mean-shift rel. error (median) | per-seed rel. rms error | "
             "per-seed r | var. increase actual/predicted |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        for pair, v in r["pairs"].items():
            lines.append(f"| {name} (K={r['K']}) | {pair} | {v['mean_shift_rel_error_median']:.3g} | "
                         f"{v.get('per_seed_rel_rms_error_median', float('nan')):.3g} | "
                         f"{v.get('per_seed_corr_median', float('nan')):.3g} | "
                         f"{v['var_increase_actual_over_predicted_median']:.3g} |")
    labels = list(next(iter(results.values()))["groups"])
    lines += ["", "Per-seed relative rms error against masked retraining, by group (median over measurements):", "",
              "| setting | prediction | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for name, r in results.items():
        for pair, v in r["pairs"].items():
            if pair.endswith("vs masked"):
                lines.append(f"| {name} | {pair.split(' vs ')[0]} | "
                             + " | ".join(f"{e:.3g}" for e in v["per_seed_rel_rms_error_by_group"]) + " |")
    lines += ["", "Wall time (s): " + "; ".join(
        f"{name}: all three predictions {r['seconds']['predictions_all_three']}, first order only "
        f"{r['seconds']['predictions_first_order_only']}, {r['seconds']['retrainings']} retrainings "
        f"{r['seconds']['retraining_masked_and_subset']}, setting total {r['wall_s']}" for name, r in results.items())
        + f" (load average {load['load_before']} before, {load['load_after']} after)."]
    atomic_write_text(out / f"{args.stem}.md", "\n".join(lines) + "\n")
    print(out / f"{args.stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
