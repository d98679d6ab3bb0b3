"""Seeds attributed per minute on the demo's configuration: one seed at a time against groups.

The demo (``dtda.demo.config()``): digits, MLP 64-128-128-10 (ReLU), SGD momentum 0.9 with weight
decay, B = 64, 10 epochs (T = 230), float32, Q = 20 test margins, reverse mode. In one process at
``--threads`` torch threads it times

- training alone and train + reverse unrolling, one seed after another (``train_member`` +
  ``unroll_member``, today's per-seed path), and
- the same in groups of ``--group`` seeds trained and unrolled in lockstep
  (``dtda.train.train_group`` + ``dtda.attribute.unroll_group``),

and prints seeds per minute (wall time, and CPU time of this process: on a shared, loaded machine
the CPU time is the steadier measure) beside the arithmetic bound of exact reverse mode: per step and seed
≈ (6 + 12·Q)·B·W flops (W = weight count: 2·B·W forward + 4·B·W backward for the replayed
training step, and 12·B·W per adjoint for the R-forward, R-backward and Hessian accumulation),
executed at the rate ``torch.mm`` reaches in this process on the dominant HVP shape
[Q·B, width] @ [width, width] (measured in the same run). Training alone is bounded by 6·B·W.

    python -m benchmarks.seeds [--threads 2] [--seeds 16] [--group 8 16] [--one 4] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from dtda import demo
from dtda.config import validate
from dtda.pipeline import Plan


def mm_rate(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 2.0) -> tuple[float, float]:
    """torch.mm's flop rate on [m, k] @ [k, n]: (per wall second, per CPU second of this process),
    medians over batches of calls for ``seconds``."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(10):
            torch.mm(a, b)
        times.append(((time.perf_counter() - t0) / 10, (time.process_time() - c0) / 10))
    flops = 2.0 * m * k * n
    return flops / statistics.median(t for t, _ in times), flops / max(statistics.median(c for _, c in times), 1e-9)


def timed(fn, repeat: int) -> tuple[float, float]:
    """Median (wall time, this process's CPU time) of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return statistics.median(t for t, _ in times), statistics.median(c for _, c in times)


def per_seed(pair: tuple[float, float], k: int) -> tuple[float, float]:
    return pair[0] / k, pair[1] / k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=16, help="seeds per grouped measurement")
    parser.add_argument("--group", type=int, nargs="*", default=[16], help="group sizes to time")
    parser.add_argument("--one", type=int, default=4, help="seeds timed one at a time")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from dtda.attribute import unroll_member
    from dtda.train import train_member

    plan = Plan.build(validate(demo.config(), source="demo config"))
    recipe, measure = plan.recipe, plan.measurement()
    train = (plan.data.X_train, plan.data.y_train)
    n, B = len(train[0]), recipe.batch_size
    T = recipe.num_steps(n)
    module = recipe.build(0)
    W = sum(p.numel() for p in module.parameters())
    Q = len(plan.test_index)
    width = max(p.shape[0] for p in module.parameters() if p.dim() == 2)
    rate, rate_cpu = mm_rate(Q * B, width, width, recipe.dtype)
    per_seed_train = 6.0 * B * W * T
    per_seed_unroll = (6.0 + 12.0 * Q) * B * W * T
    print(f"demo: N = {n}, B = {B}, T = {T}, W = {W}, Q = {Q}, threads = {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"torch.mm [{Q * B}, {width}] @ [{width}, {width}]: {rate / 1e9:.1f} GFLOP/s wall, "
          f"{rate_cpu / 1e9:.1f} GFLOP per CPU second -> bound "
          f"{60 * rate / per_seed_train:.0f} seeds/min (train), {60 * rate / per_seed_unroll:.0f} seeds/min "
          f"(train + unroll)")
    rows = []
    seeds = list(range(args.one))
    t_train = per_seed(timed(lambda: [train_member(recipe, train, s) for s in seeds], args.repeat), len(seeds))
    members = [train_member(recipe, train, s) for s in seeds]
    t_unroll = per_seed(timed(lambda: [unroll_member(recipe, train, m, measure) for m in members], args.repeat),
                        len(seeds))
    rows.append(("one at a time", t_train, t_unroll))
    try:
        from dtda.attribute import unroll_group
        from dtda.train import train_group
    except ImportError:
        train_group = None
    if train_group is not None:
        for K in args.group:
            seeds = list(range(args.seeds))
            groups = [seeds[i:i + K] for i in range(0, len(seeds), K)]
            t_train = per_seed(timed(lambda groups=groups: [train_group(recipe, train, g) for g in groups],
                                     args.repeat), len(seeds))
            trained = [train_group(recipe, train, g) for g in groups]
            t_unroll = per_seed(timed(lambda trained=trained: [unroll_group(recipe, train, ms, measure)
                                                               for ms in trained], args.repeat), len(seeds))
            rows.append((f"groups of {K}", t_train, t_unroll))
    for clock, i, r in (("wall", 0, rate), ("CPU", 1, rate_cpu)):
        print(f"{clock} time ({'seeds per minute' if i == 0 else 'seeds per CPU minute'}; bound at "
              f"{r / 1e9:.1f} GFLOP/s):")
        print(f"  {'path':<16} {'train s/seed':>12} {'seeds/min':>10} {'x today':>8} {'of bound':>9}   "
              f"{'train+unroll s/seed':>19} {'seeds/min':>10} {'x today':>8} {'of bound':>9}")
        base_t, base_u = rows[0][1][i], rows[0][1][i] + rows[0][2][i]
        for name, tt, tu in rows:
            t, u = tt[i], tt[i] + tu[i]
            print(f"  {name:<16} {t:12.3f} {60 / t:10.1f} {base_t / t:8.2f} {per_seed_train / t / r:9.0%}   "
                  f"{u:19.3f} {60 / u:10.1f} {base_u / u:8.2f} {per_seed_unroll / u / r:9.0%}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
