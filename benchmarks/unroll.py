"""Reverse-mode unrolled differentiation vs training: time ratio and peak memory.

One member of an MLP on scikit-learn's bundled digits (1797 × 64, first 1437 for training),
Q measurements (test margins): time to train it, time of reverse-mode UD for all N examples and
all Q measurements (one adjoint sweep, Q adjoints batched), their ratio, and the peak
resident-memory increase of each phase (:func:`benchmarks.common.peak_rss_delta`). Defaults: 64-512-512-10 ReLU (≈ 300k parameters), SGD momentum 0.9,
lr 0.03, weight decay 1e-3, B = 64, 3 epochs, float32, Q = 16, route auto (= mlp here).

    python -m benchmarks.unroll [--hidden 512] [--epochs 3] [--queries 16] [--route mlp ghost]
                                [--repeat 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import dtda.measure as M
import dtda.train as T
from benchmarks.common import peak_rss_delta
from dtda.attribute import unroll_member
from dtda.attribute.reverse import ROUTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--route", nargs="+", default=["auto"], choices=ROUTES,
                        help="one or more reverse-mode routes, timed on the same members")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    train, (Xq, yq) = (X[:1437], y[:1437]), (X[1437:1437 + args.queries], y[1437:1437 + args.queries])
    h = args.hidden
    recipe = T.Recipe(lambda: nn.Sequential(nn.Linear(64, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 10)),
                      "cross_entropy", T.SGD(0.03, momentum=0.9, weight_decay=1e-3),
                      batch_size=args.batch_size, epochs=args.epochs)
    params = sum(p.numel() for p in recipe.build(0).parameters())
    measure = M.margin(Xq, yq)
    routes = args.route
    train_times, train_peak = [], 0
    unroll_times, unroll_peak = {r: [] for r in routes}, dict.fromkeys(routes, 0)
    # run 0 warms up (first-call costs of torch.func / batched autograd); later runs are timed.
    # Each run trains a member, then unrolls it by every route: the ratios compare times taken
    # in the same process under the same (shared-machine) load.
    for rep in range(args.repeat + 1):
        t0 = time.perf_counter()
        member, peak = peak_rss_delta(lambda rep=rep: T.train_member(recipe, train, seed=rep))
        train_times.append(time.perf_counter() - t0)
        train_peak = max(train_peak, peak) if rep else 0
        for route in routes:
            t0 = time.perf_counter()
            _, peak = peak_rss_delta(
                lambda member=member, route=route: unroll_member(recipe, train, member, measure, route=route))
            unroll_times[route].append(time.perf_counter() - t0)
            unroll_peak[route] = max(unroll_peak[route], peak) if rep else 0
    steps = recipe.num_steps(1437)
    t_train = statistics.median(train_times[1:])
    print(f"model 64-{h}-{h}-10 ({params} parameters), N = 1437, B = {args.batch_size}, T = {steps}, "
          f"Q = {args.queries}, threads = {torch.get_num_threads()}")
    print(f"train          median {t_train:.3f} s ({1e3 * t_train / steps:.2f} ms/step)   "
          f"runs {[round(t, 3) for t in train_times[1:]]}   peak RSS +{train_peak / 2**20:.0f} MiB")
    for route in routes:
        t_unroll = statistics.median(unroll_times[route][1:])
        print(f"unroll {route:15s} median {t_unroll:.3f} s ({1e3 * t_unroll / steps:.2f} ms/step)   "
              f"runs {[round(t, 3) for t in unroll_times[route][1:]]}   peak RSS +{unroll_peak[route] / 2**20:.0f} MiB"
              f"   ratio {t_unroll / t_train:.2f} ({t_unroll / t_train / args.queries:.2f} per measurement)")

if __name__ == "__main__":
    main()
