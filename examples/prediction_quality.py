"""How good are the predictions? Linearised m_s + δ_s(G) and non-linear m(θ_s + Δθ_s(G)) against
masked and subset retraining, for single examples and small groups (issue 10, PAPER §3, §7, §8.1).

Settings: ``digits`` (the demo's data, model and optimiser; fewer seeds and epochs, see --help)
and ``toy1d`` (PAPER §9's 1-D regression, m = f at x = −1, 0, 1). Groups: the two examples with
the largest |δ̄| on the first measurement, the top 5 by |δ̄|, and 5 random examples. For each
(predictor, target) pair, over groups and measurements:

- mean-shift error: median over (group, q) of |δ̄_pred − δ̄_actual| / |δ̄_actual|;
- per-seed error (masked target only): median of rms_s(pred_s − actual_s) / rms_s(actual_s);
- variance-increase ratio: median of actual / predicted variance increase.

    python examples/prediction_quality.py                 # writes docs/results/prediction_quality.*
    python examples/prediction_quality.py --quick         # seconds (a temporary folder)
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
    preds = predictions(ens, measure, groups)
    actual = {mode: retrained_samples(reverse, recipe, train, measure, groups, mode=mode) for mode in ("masked", "subset")}
    out = {"K": K, "N": len(train[0]), "Q": reverse.Q, "groups": dict(zip(labels, groups)), "pairs": {}}
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
                row["per_seed_rel_rms_error_median"] = float((rms(pred.delta - act.delta) / rms(act.delta)).median())
                row["per_seed_corr_median"] = float(pearson(pred.delta, act.delta, 0).nanmedian())
            out["pairs"][f"{kind} vs {mode}"] = row
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--settings", default="toy1d,digits")
    ap.add_argument("--out", help="folder (default docs/results; --quick: a temporary folder)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="pq-")) if args.quick else ROOT / "docs" / "results")
    torch.set_num_threads(1)
    results = {}
    for name in args.settings.split(","):
        results[name] = measure_setting(name, args.quick)
        print(name, json.dumps(results[name], indent=1), file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prediction_quality.json").write_text(json.dumps({"quick": args.quick, **results}, indent=1) + "\n")
    lines = ["| setting | prediction vs retraining | mean-shift rel. error (median) | per-seed rel. rms error | "
             "per-seed r | var. increase actual/predicted |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        for pair, v in r["pairs"].items():
            lines.append(f"| {name} (K={r['K']}) | {pair} | {v['mean_shift_rel_error_median']:.3g} | "
                         f"{v.get('per_seed_rel_rms_error_median', float('nan')):.3g} | "
                         f"{v.get('per_seed_corr_median', float('nan')):.3g} | "
                         f"{v['var_increase_actual_over_predicted_median']:.3g} |")
    (out / "prediction_quality.md").write_text("\n".join(lines) + "\n")
    print(out / "prediction_quality.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
