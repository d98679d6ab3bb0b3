"""Seeds attributed per minute on the demo's configuration: one seed at a time against groups.

The demo (``dtda.demo.config()``): digits, MLP 64-128-128-10 (ReLU), SGD momentum 0.9 with weight
decay, B = 64, 10 epochs (T = 230), float32, Q = 20 test margins, reverse mode. In one process at
``--threads`` torch threads it times

- training alone, train + reverse unrolling, and forward-mode unrolling for ``--forward-groups``
  removal groups of 10 examples each, one seed after another (``train_member`` +
  ``unroll_member``, the per-seed path), and
- the same in groups of ``--group`` seeds trained and unrolled in lockstep
  (``dtda.train.train_group`` + ``dtda.attribute.unroll_group``),

beside the arithmetic bound of exact reverse mode: per step and seed ≈ (6 + 12·Q)·B·W flops
(W = weight count: 2·B·W forward + 4·B·W backward for the replayed training step, and 12·B·W per
adjoint for the R-forward, R-backward and Hessian accumulation), executed at the rate ``torch.mm``
reaches in this process on the dominant HVP shape [Q·B, width] @ [width, width]. Training alone
is bounded by 6·B·W.

The machine's speed drifts by tens of percent within minutes (a shared host), so the paths are
timed in ``--repeat`` interleaved rounds, and around each path's timing in a round the mm rate is
sampled again (the mean of a sample just before and one just after, since the eighth session):
a path's fraction of the bound uses the rate of its own moment, and its speed-up
over one seed at a time is the ratio within a round. The table prints medians over rounds, with
the range over rounds for seeds per minute and the fraction of the bound.

``--processes P`` (P > 1) also times the demo's own layout: P worker processes of
``threads / P`` torch threads each, every worker training and reverse-unrolling its share of the
``--seeds`` in groups of ``seeds / P`` (or of each size in ``--process-groups``, interleaved),
started together after a warm-up, ``--repeat`` rounds with the one-thread mm rate sampled before
and after each (while the workers wait); seeds per minute from the wall time until the last
worker is done (bound: P times the one-thread mm rate). Cores share caches, memory bandwidth and
(on a cloud host) the machine's other tenants, so just before each round the P workers also
sample the mm rate all at once: the bound at that all-busy rate is printed beside it.

    python -m benchmarks.seeds [--threads 2] [--seeds 16] [--group 8 16] [--one 2] [--repeat 3]
                               [--forward-groups 10] [--processes 2] [--process-groups 2 4 8]
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
from dtda.train.workers import keep_freed_memory


def mm_rate(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 0.5) -> tuple[float, float]:
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


def clocked(fn) -> tuple[float, float]:
    """(wall, this process's CPU) seconds of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


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

    def one_at_a_time(self, seeds) -> "Path":
        r, s = self.recipe, self.train
        return Path(self, [[k] for k in seeds], lambda unit: [self.train_member(r, s, unit[0])],
                    lambda ms, *how: [self.unroll_member(r, s, m, self.measure, *how) for m in ms])

    def grouped(self, seeds, K) -> "Path":
        r, s = self.recipe, self.train
        return Path(self, [seeds[i:i + K] for i in range(0, len(seeds), K)], lambda g: self.train_group(r, s, g),
                    lambda ms, *how: self.unroll_group(r, s, ms, self.measure, *how))

    def train_and_unroll(self, seeds):
        """Train ``seeds`` as one group and reverse-unroll it (the demo's unit of work)."""
        members = self.train_group(self.recipe, self.train, list(seeds))
        self.unroll_group(self.recipe, self.train, members, self.measure)


class Path:
    """One way of training and unrolling ``units`` (lists of seeds): :meth:`sample` times it once."""

    def __init__(self, work: Demo, units, train, unroll):
        self.work, self.units, self.train, self.unroll = work, units, train, unroll
        self.n = sum(len(u) for u in units)
        self.trained = [train(u) for u in units]  # also the warm-up
        self._reverse()
        if work.groups:
            self._forward()

    def _reverse(self):
        for ms in self.trained:
            self.unroll(ms, "reverse")

    def _forward(self):
        for ms in self.trained:
            self.unroll(ms, "forward", self.work.groups)

    def sample(self) -> dict:
        """Per-seed (wall, CPU) seconds of training, reverse unrolling and forward unrolling (None
        when skipped), and the mm rate (wall, CPU): the mean of samples just before and just after."""
        work = self.work
        before = mm_rate(work.Q * work.B, work.width, work.width, work.recipe.dtype)
        per_seed = lambda pair: (pair[0] / self.n, pair[1] / self.n)  # noqa: E731
        out = {"train": per_seed(clocked(lambda: [self.train(u) for u in self.units])),
               "reverse": per_seed(clocked(self._reverse))}
        out["forward"] = per_seed(clocked(self._forward)) if work.groups else None
        after = mm_rate(work.Q * work.B, work.width, work.width, work.recipe.dtype)
        out["rate"] = tuple((b + a) / 2 for b, a in zip(before, after))
        return out


def _worker(seeds, threads, rounds, sizes, barrier, results, busy_rates):
    keep_freed_memory()  # as the executors' worker processes
    torch.set_num_threads(threads)
    work = Demo(0)
    for size in sizes:  # warm-up, as a worker's first group is in a run
        work.train_and_unroll(seeds[:size])
    for _ in range(rounds):
        for size in sizes:
            barrier.wait()  # ready: the driver samples the one-thread mm rate while every worker waits
            barrier.wait()  # every worker samples it at once: the rate with all P cores busy
            busy_rates.put(mm_rate(work.Q * work.B, work.width, work.width, work.recipe.dtype)[0])
            barrier.wait()  # go
            for i in range(0, len(seeds), size):
                work.train_and_unroll(seeds[i:i + size])
            results.put(time.perf_counter())


def processes(work: Demo, n_seeds: int, P: int, threads: int, rounds: int,
              sizes: list[int]) -> dict[int, list[tuple[float, float, float]]]:
    """For each group size in ``sizes`` (interleaved within each round), per round: (wall seconds
    for P worker processes of ``threads`` threads to train + unroll ``n_seeds`` seeds, n_seeds / P
    each in groups of that size, started together; the one-thread mm rate in this process, the
    mean of samples just before and just after, while the workers wait; the sum of the P workers'
    mm rates sampled at once just before, all P cores busy)."""
    ctx = mp.get_context("spawn")
    barrier, results, busy_rates = ctx.Barrier(P + 1), ctx.Queue(), ctx.Queue()
    share = n_seeds // P
    workers = [ctx.Process(target=_worker, args=(list(range(i * share, (i + 1) * share)), threads, rounds, sizes,
                                                 barrier, results, busy_rates)) for i in range(P)]
    for w in workers:
        w.start()
    torch.set_num_threads(1)
    out: dict[int, list[tuple[float, float, float]]] = {size: [] for size in sizes}
    for _ in range(rounds):
        for size in sizes:
            barrier.wait()
            before, _ = mm_rate(work.Q * work.B, work.width, work.width, work.recipe.dtype)
            barrier.wait()
            busy = sum(busy_rates.get() for _ in workers)
            barrier.wait()
            t0 = time.perf_counter()
            wall = max(results.get() for _ in workers) - t0
            after, _ = mm_rate(work.Q * work.B, work.width, work.width, work.recipe.dtype)
            out[size].append((wall, (before + after) / 2, busy))
    for w in workers:
        w.join()
    return out


def _spread(values: list[float], fmt: str) -> str:
    """median [min–max] of ``values``."""
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}–{format(max(values), fmt)}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=16, help="seeds per grouped measurement")
    parser.add_argument("--group", type=int, nargs="*", default=[16], help="group sizes to time")
    parser.add_argument("--one", type=int, default=2, help="seeds timed one at a time")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--forward-groups", type=int, default=10,
                        help="forward mode: removal groups of 10 examples (0: skip forward mode)")
    parser.add_argument("--processes", type=int, default=0, help="also time P worker processes (0: skip)")
    parser.add_argument("--process-groups", type=int, nargs="*", default=[],
                        help="group sizes within each worker's share (default: the share as one group)")
    args = parser.parse_args()
    keep_freed_memory()  # the paths in this process run as in the executors' workers
    torch.set_num_threads(args.threads)
    work = Demo(args.forward_groups)
    B, W, Q, T = work.B, work.W, work.Q, work.T
    per_seed_train = 6.0 * B * W * T
    per_seed_unroll = (6.0 + 12.0 * Q) * B * W * T
    print(f"demo: N = {work.n}, B = {B}, T = {T}, W = {W}, Q = {Q}, threads = {torch.get_num_threads()}, "
          f"{args.repeat} rounds, load average {os.getloadavg()[0]:.2f}")
    paths = {"one at a time": work.one_at_a_time(list(range(args.one)))}
    for K in args.group:
        paths[f"groups of {K}"] = work.grouped(list(range(args.seeds)), K)
    rounds = [{name: path.sample() for name, path in paths.items()} for _ in range(args.repeat)]
    rates = [s["rate"][0] for r in rounds for s in r.values()]
    print(f"torch.mm [{Q * B}, {work.width}] @ [{work.width}, {work.width}]: "
          f"{_spread([r / 1e9 for r in rates], '.1f')} "
          f"GFLOP/s wall over the samples -> bound {60 * statistics.median(rates) / per_seed_unroll:.0f} seeds/min "
          "(train + unroll) at the median rate")
    for clock, i in (("wall", 0), ("CPU", 1)):
        print(f"{clock} time (medians over rounds [range]; of bound: at the mean mm rate sampled before and after"
              f" each timing{', per CPU second' if i else ''}):")
        print(f"  {'path':<16} {'train s/seed':>12} {'x one':>6} {'of bound':>9}   {'train+unroll s/seed':>19} "
              f"{'seeds/min':>18} {'x one':>6} {'of bound':>15}   {'forward s/seed':>14} {'x one':>6}")
        for name in paths:
            rows = [r[name] for r in rounds]
            ones = [r["one at a time"] for r in rounds]
            train = [s["train"][i] for s in rows]
            total = [s["train"][i] + s["reverse"][i] for s in rows]
            x_train = [o["train"][i] / s["train"][i] for o, s in zip(ones, rows)]
            x_total = [(o["train"][i] + o["reverse"][i]) / t for o, t in zip(ones, total)]
            bound_train = [per_seed_train / s["train"][i] / s["rate"][i] for s in rows]
            bound_total = [per_seed_unroll / t / s["rate"][i] for t, s in zip(total, rows)]
            fwd = ""
            if rows[0]["forward"]:
                f = [s["forward"][i] for s in rows]
                fwd = (f"{statistics.median(f):14.3f} "
                       f"{statistics.median(o['forward'][i] / x for o, x in zip(ones, f)):6.2f}")
            print(f"  {name:<16} {statistics.median(train):12.3f} {statistics.median(x_train):6.2f} "
                  f"{statistics.median(bound_train):9.0%}   {statistics.median(total):19.3f} "
                  f"{_spread([60 / t for t in total], '.1f'):>18} {statistics.median(x_total):6.2f} "
                  f"{_spread([100 * b for b in bound_total], '.0f'):>15}   {fwd}")
    if args.processes > 1:
        P, threads = args.processes, max(1, args.threads // args.processes)
        sizes = args.process_groups or [args.seeds // P]
        for size, runs in processes(work, args.seeds, P, threads, args.repeat, sizes).items():
            per_min = [60 * args.seeds / wall for wall, _, _ in runs]
            of_bound = [100 * per_seed_unroll * args.seeds / wall / (P * rate) for wall, rate, _ in runs]
            of_busy = [100 * per_seed_unroll * args.seeds / wall / busy for wall, _, busy in runs]
            print(f"{P} processes x {threads} thread(s), {args.seeds // P} seeds each in groups of {size}, "
                  f"{args.repeat} rounds: one-thread mm {_spread([r / 1e9 for _, r, _ in runs], '.1f')} GFLOP/s "
                  f"(all {P} at once: {_spread([b / P / 1e9 for _, _, b in runs], '.1f')} each); train + unroll "
                  f"{_spread([wall / args.seeds for wall, _, _ in runs], '.3f')} s/seed, "
                  f"{_spread(per_min, '.1f')} seeds/min, {_spread(of_bound, '.0f')} % of bound "
                  f"({_spread(of_busy, '.0f')} % of it at the all-busy mm rate)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
