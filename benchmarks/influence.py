"""Influence functions per seed vs reverse-mode unrolled differentiation, on the demo configuration.

The demo (``dtda.demo.config()``: sklearn digits, MLP 64-128-128-10 ReLU, SGD momentum 0.9, lr
0.03, weight decay 1e-3, B = 64, 10 epochs, margins of 20 test digits): K members are trained,
then each method attributes all N training examples for all Q measurements (default damping
"training-time", true Fisher). Prints, per method, the wall time per seed and, per statistic of
``dtda.stats.agreement.agreement`` with unrolling as the reference, the median over the Q
measurements (Spearman of the mean shift, Spearman of the variance increase, median per-seed
Pearson, top-10 overlap). ``exact`` is not run: it builds a d × d matrix and the demo MLP has
d = 26 122 > ``ihvp.MAX_EXACT`` parameters.

    python -m benchmarks.influence [--seeds 8] [--repeat 1] [--quick] [--threads 1]
                                   [--methods identity diagonal kfac ekfac cg lissa astra source]
                                   [--option cg.max_iter=50 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import dtda
from dtda.attribute.ihvp import MAX_EXACT
from dtda.config import validate
from dtda.demo import config as demo_config
from dtda.pipeline import Plan
from dtda.stats.agreement import AGREEMENT, agreement
from dtda.train import train_ensemble
from dtda.train.ensemble import Ensemble

METHODS = ("identity", "diagonal", "kfac", "ekfac", "cg", "lissa", "astra", "source")


def _timed(fn, repeat: int):
    """(result of the last call, median seconds over ``repeat`` calls; warm-up is the caller's)."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times)


def _options(pairs: list[str]) -> dict[str, dict]:
    """``method.option=value`` (value parsed as JSON, else kept as a string) -> {method: {option: value}}."""
    out: dict[str, dict] = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        method, option = key.split(".", 1)
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(method, {})[option] = parsed
    return out


def _summary(reference, got) -> dict[str, float]:
    """Each agreement statistic's median over the Q measurements."""
    return {k: float(v.nanmedian()) for k, v in agreement(reference, got).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="the demo's quick configuration")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--option", action="append", default=[], help="method.option=value, e.g. cg.max_iter=50")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    options = _options(args.option)
    plan = Plan.build(validate(demo_config(args.quick)))
    ens = train_ensemble(plan.recipe, (plan.data.X_train, plan.data.y_train), seeds=args.seeds)
    measure = plan.measurement()
    K, N = len(ens), len(ens.data)
    params = sum(p.numel() for p in ens.members[0].params.values())
    print(f"demo{' (quick)' if args.quick else ''}: N = {N}, Q = {len(plan.test_index)}, d = {params} parameters, "
          f"T = {ens.members[0].record.steps} steps, {len(ens.members[0].record.checkpoints)} checkpoints, "
          f"K = {K} seeds, torch threads = {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}; "
          f"exact not run (d > {MAX_EXACT})", flush=True)
    one = Ensemble(ens.recipe, ens.data, ens.members[:1])  # warm-up: first-call compilation is not timed
    dtda.unroll(one, measure)
    dtda.influence(one, measure, method="ekfac")
    reference, t_unroll = _timed(lambda: dtda.unroll(ens, measure), args.repeat)
    rows = [{"method": "unroll (reverse)", "s_per_seed": t_unroll / K, **_summary(reference, reference)}]
    print(f"{'method':<20}{'s/seed':>8}{'x unroll':>9}" + "".join(f"{k:>22}" for k in AGREEMENT), flush=True)

    def show(row):
        print(f"{row['method']:<20}{row['s_per_seed']:>8.3f}{row['s_per_seed'] / rows[0]['s_per_seed']:>9.2f}"
              + "".join(f"{row[k]:>22.3f}" for k in AGREEMENT), flush=True)
    show(rows[0])
    for method in args.methods:
        got, t = _timed(lambda name=method: dtda.influence(ens, measure, method=name, **options.get(name, {})),
                        args.repeat)
        residuals = [s.get("residual") for s in got.meta["seeds"] if isinstance(s, dict)]
        rows.append({"method": f"influence-{method}", "s_per_seed": t / K, **_summary(reference, got),
                     "options": options.get(method, {}), "damping": got.meta["damping"]["value"],
                     "residuals": residuals if any(r is not None for r in residuals) else None})
        show(rows[-1])
        if args.json:  # after every method, so a long run keeps what it measured
            with open(args.json, "w") as f:
                json.dump({"K": K, "N": N, "Q": len(plan.test_index), "d": params, "rows": rows,
                           "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}, f, indent=1)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
