"""Influence functions per seed vs reverse-mode unrolled differentiation, on the demo configuration.

The demo (``dtda.demo.config()``: sklearn digits, MLP 64-128-128-10 ReLU, SGD momentum 0.9, lr
0.03, weight decay 1e-3, B = 64, 10 epochs, margins of 20 test digits): K members are trained,
then each method attributes all N training examples for all Q measurements. Prints, per method,
the wall time per seed (median over repeats) and its agreement with unrolling: the median over
seeds of the Pearson correlation of δ_s(·, q) with unrolling's, pooled over q.

    python -m benchmarks.influence [--seeds 2] [--repeat 3] [--quick] [--threads 1]
                                   [--methods identity diagonal kfac ekfac]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import dtda
from dtda.config import validate
from dtda.demo import config as demo_config
from dtda.pipeline import Plan
from dtda.train import train_ensemble


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double() - a.double().mean(), b.flatten().double() - b.double().mean()
    return float((a @ b) / (a.norm() * b.norm()))


def _timed(fn, repeat: int):
    """(result of the last call, median seconds) over ``repeat`` calls after one warm-up call."""
    result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the demo's quick configuration")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--methods", nargs="+", default=["identity", "diagonal", "kfac", "ekfac"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = Plan.build(validate(demo_config(args.quick)))
    ens = train_ensemble(plan.recipe, (plan.data.X_train, plan.data.y_train), seeds=args.seeds)
    measure = plan.measurement()
    K, N = len(ens), len(ens.data)
    params = sum(p.numel() for p in ens.members[0].params.values())
    print(f"demo{' (quick)' if args.quick else ''}: N = {N}, Q = {len(plan.test_index)}, "
          f"{params} parameters, T = {ens.members[0].record.steps} steps, K = {K} seeds, "
          f"torch threads = {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    reference, t_unroll = _timed(lambda: dtda.unroll(ens, measure), args.repeat)
    rows = [("unroll (reverse)", t_unroll / K, 1.0)]
    for method in args.methods:
        got, t = _timed(lambda method=method: dtda.influence(ens, measure, method=method), args.repeat)
        agree = statistics.median(_pearson(got.delta[s], reference.delta[s]) for s in range(K))
        rows.append((f"influence-{method}", t / K, agree))
    print(f"{'method':<22}{'s / seed':>10}{'vs unroll':>11}{'pearson δ':>11}")
    for name, per_seed, agree in rows:
        print(f"{name:<22}{per_seed:>10.3f}{per_seed / rows[0][1]:>10.2f}x{agree:>11.3f}")


if __name__ == "__main__":
    main()
