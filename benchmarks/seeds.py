"""Seeds attributed per minute on the demo's configuration: one seed at a time against groups.

The demo (``dtda.demo.config()``): digits, MLP 64-128-128-10 (ReLU), SGD momentum 0.9 with weight
decay, B = 64, 10 epochs (T = 230), float32, Q = 20 test margins, reverse mode. In one process at
``--threads`` torch threads it times

- training alone, train + reverse unrolling, and forward-mode unrolling for ``--forward-groups``
  removal groups of 10 examples each, one seed after another (``train_member`` +
  ``unroll_member``, the per-seed path), and
- the same in groups of ``--group`` seeds trained and unrolled in lockstep
  (``dtda.train.train_group`` + ``dtda.attribute.unroll_group``),

and prints seeds per minute (wall time, and CPU time of this process: on a shared, loaded machine
the CPU time is the steadier measure) beside the arithmetic bound of exact reverse mode: per step and seed
≈ (6 + 12·Q)·B·W flops (W = weight count: 2·B·W forward + 4·B·W backward for the replayed
training step, and 12·B·W per adjoint for the R-forward, R-backward and Hessian accumulation),
executed at the rate ``torch.mm`` reaches in this process on the dominant HVP shape
[Q·B, width] @ [width, width] (measured in the same run). Training alone is bounded by 6·B·W.

``--processes P`` (P > 1) also times the demo's own layout: P worker processes of
``threads / P`` torch threads each, every worker training and reverse-unrolling its share of the
``--seeds`` in groups of ``seeds / P``, all started together after a warm-up; seeds per minute
from the wall time until the last worker is done (bound: P times the per-thread mm rate).

    python -m benchmarks.seeds [--threads 2] [--seeds 16] [--group 8 16] [--one 4] [--repeat 2]
                               [--forward-groups 10] [--processes 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
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


class Demo:
    """The demo's recipe, training data, measurement, forward-mode removal groups and sizes."""

    def __init__(self, forward_groups: int):
        from dtda.attribute import unroll_group, unroll_member
        from dtda.train import train_group, train_member

        plan = Plan.build(validate(demo.config(), source="demo config"))
        self.recipe, self.measure = plan.recipe, plan.measurement()
        self.train = (plan.data.X_train, plan.data.y_train)
        self.n, self.B = len(self.train[0]), self.recipe.batch_size
        self.T = self.recipe.num_steps(self.n)
        module = self.recipe.build(0)
        self.W = sum(p.numel() for p in module.parameters())
        self.Q = len(plan.test_index)
        self.width = max(p.shape[0] for p in module.parameters() if p.dim() == 2)
        self.groups = [list(range(10 * g, 10 * g + 10)) for g in range(forward_groups)]
        self.train_member, self.unroll_member = train_member, unroll_member
        self.train_group, self.unroll_group = train_group, unroll_group

    def one_at_a_time(self, seeds, repeat):
        """Per-seed (wall, CPU) seconds of training, reverse unrolling and forward unrolling."""
        r, s = self.recipe, self.train
        return self._times([[k] for k in seeds], lambda unit: [self.train_member(r, s, unit[0])],
                           lambda ms, *how: [self.unroll_member(r, s, m, self.measure, *how) for m in ms], repeat)

    def grouped(self, seeds, K, repeat):
        r, s = self.recipe, self.train
        return self._times([seeds[i:i + K] for i in range(0, len(seeds), K)], lambda g: self.train_group(r, s, g),
                           lambda ms, *how: self.unroll_group(r, s, ms, self.measure, *how), repeat)

    def _times(self, units, train, unroll, repeat):
        n = sum(len(u) for u in units)
        t_train = per_seed(timed(lambda: [train(u) for u in units], repeat), n)
        trained = [train(u) for u in units]
        t_rev = per_seed(timed(lambda: [unroll(ms, "reverse") for ms in trained], repeat), n)
        t_fwd = per_seed(timed(lambda: [unroll(ms, "forward", self.groups) for ms in trained], repeat),
                         n) if self.groups else None
        return t_train, t_rev, t_fwd

    def train_and_unroll(self, seeds):
        """Train ``seeds`` as one group and reverse-unroll it (the demo's unit of work)."""
        members = self.train_group(self.recipe, self.train, list(seeds))
        self.unroll_group(self.recipe, self.train, members, self.measure)


def _worker(seeds, threads, barrier, results):
    torch.set_num_threads(threads)
    work = Demo(0)
    work.train_and_unroll(seeds)  # warm-up, as a worker's first group is in a run
    barrier.wait()
    t0 = time.perf_counter()
    work.train_and_unroll(seeds)
    results.put(time.perf_counter() - t0)


def processes(n_seeds: int, P: int, threads: int) -> float:
    """Wall seconds for P worker processes of ``threads`` threads to train + unroll ``n_seeds``
    seeds (a group of n_seeds / P each), started together after a warm-up group each."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(P + 1), ctx.Queue()
    share = n_seeds // P
    workers = [ctx.Process(target=_worker, args=(list(range(i * share, (i + 1) * share)), threads, barrier, results))
               for i in range(P)]
    for w in workers:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for _ in workers:
        results.get()
    wall = time.perf_counter() - t0
    for w in workers:
        w.join()
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=16, help="seeds per grouped measurement")
    parser.add_argument("--group", type=int, nargs="*", default=[16], help="group sizes to time")
    parser.add_argument("--one", type=int, default=4, help="seeds timed one at a time")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--forward-groups", type=int, default=10,
                        help="forward mode: removal groups of 10 examples (0: skip forward mode)")
    parser.add_argument("--processes", type=int, default=0, help="also time P worker processes (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Demo(args.forward_groups)
    B, W, Q, T, width = work.B, work.W, work.Q, work.T, work.width
    rate, rate_cpu = mm_rate(Q * B, width, width, work.recipe.dtype)
    per_seed_train = 6.0 * B * W * T
    per_seed_unroll = (6.0 + 12.0 * Q) * B * W * T
    print(f"demo: N = {work.n}, B = {B}, T = {T}, W = {W}, Q = {Q}, threads = {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"torch.mm [{Q * B}, {width}] @ [{width}, {width}]: {rate / 1e9:.1f} GFLOP/s wall, "
          f"{rate_cpu / 1e9:.1f} GFLOP per CPU second -> bound "
          f"{60 * rate / per_seed_train:.0f} seeds/min (train), {60 * rate / per_seed_unroll:.0f} seeds/min "
          f"(train + unroll)")
    rows = [("one at a time", *work.one_at_a_time(list(range(args.one)), args.repeat))]
    for K in args.group:
        rows.append((f"groups of {K}", *work.grouped(list(range(args.seeds)), K, args.repeat)))
    for clock, i, r in (("wall", 0, rate), ("CPU", 1, rate_cpu)):
        print(f"{clock} time ({'seeds per minute' if i == 0 else 'seeds per CPU minute'}; bound at "
              f"{r / 1e9:.1f} GFLOP/s):")
        print(f"  {'path':<16} {'train s/seed':>12} {'seeds/min':>10} {'x today':>8} {'of bound':>9}   "
              f"{'train+unroll s/seed':>19} {'seeds/min':>10} {'x today':>8} {'of bound':>9}   "
              f"{'forward s/seed':>14} {'x today':>8}")
        base_t, base_u = rows[0][1][i], rows[0][1][i] + rows[0][2][i]
        base_f = rows[0][3][i] if rows[0][3] else None
        for name, tt, tu, tf in rows:
            t, u = tt[i], tt[i] + tu[i]
            fwd = f"{tf[i]:14.3f} {base_f / tf[i]:8.2f}" if tf else ""
            print(f"  {name:<16} {t:12.3f} {60 / t:10.1f} {base_t / t:8.2f} {per_seed_train / t / r:9.0%}   "
                  f"{u:19.3f} {60 / u:10.1f} {base_u / u:8.2f} {per_seed_unroll / u / r:9.0%}   {fwd}")
    if args.processes > 1:
        P, threads = args.processes, max(1, args.threads // args.processes)
        torch.set_num_threads(threads)
        one_thread, _ = mm_rate(Q * B, width, width, work.recipe.dtype)
        print(f"load average {os.getloadavg()[0]:.2f}; {P} processes x {threads} thread(s), mm "
              f"{one_thread / 1e9:.1f} GFLOP/s per process -> bound {60 * P * one_thread / per_seed_unroll:.0f} "
              f"seeds/min (train + unroll)")
        wall = processes(args.seeds, P, threads)
        print(f"  {P} processes, groups of {args.seeds // P}: train + unroll {wall / args.seeds:.3f} s/seed, "
              f"{60 * args.seeds / wall:.1f} seeds/min, {per_seed_unroll * args.seeds / wall / (P * one_thread):.0%} "
              "of bound")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
