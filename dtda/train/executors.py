"""Executors: run one picklable job over many seeds, streaming results back to one reduction.

A seed, or a group of seeds (a tuple, trained in lockstep: the run pipeline's unit), is the unit
of work; "seed" below stands for either. ``executor.run(job, seeds, on_result)`` calls ``job(seed)`` for
every seed and hands each result to ``on_result(seed, result)`` *in the calling process*, in
completion order, as soon as it arrives (so the caller stores it before the next one comes). A
job that raises, or whose worker dies (killed, out of memory, lost node), is run again, up to
``retries`` more times; a seed that still fails raises :class:`TaskFailed` after the other seeds
finish. Jobs must be deterministic functions of the seed, so a retry gives the same result.

- :class:`LocalExecutor`: in this process, one seed after another.
- :class:`ProcessExecutor`: a pool of ``workers`` spawned processes on this machine.
- :class:`RayExecutor`: tasks on a Ray cluster (an existing one at ``address``, or a local one).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch

from dtda.train.workers import exit_with_parent, keep_freed_memory

OnResult = Callable[[int, Any], None]


class TaskFailed(RuntimeError):
    """Seeds whose job failed on every attempt; ``errors`` maps seed → the last error text."""

    def __init__(self, errors: dict[int, str]):
        self.errors = errors
        detail = "\n".join(f"  seed {s}: {e.strip().splitlines()[-1] if e.strip() else e}" for s, e in errors.items())
        super().__init__(f"{len(errors)} seed task(s) failed after all retries:\n{detail}")


class LocalExecutor:
    """Runs seeds one after another in this process (the default; errors are retried too)."""

    def __init__(self, retries: int = 0):
        self.retries = retries

    def run(self, job: Callable[[int], Any], seeds: Sequence[int], on_result: OnResult) -> None:
        errors: dict[int, str] = {}
        for seed in seeds:
            for _attempt in range(self.retries + 1):
                try:
                    result = job(seed)
                except Exception:
                    errors[seed] = traceback.format_exc()
                    continue
                errors.pop(seed, None)
                on_result(seed, result)
                break
        if errors:
            raise TaskFailed(errors)


_WORKER_JOB: Callable[[int], Any] | None = None


def _init_worker(job: Callable[[int], Any], threads: int, driver_pid: int) -> None:
    global _WORKER_JOB
    exit_with_parent(driver_pid)  # no worker outlives the driver, even one killed with -9
    keep_freed_memory()
    _WORKER_JOB = job
    torch.set_num_threads(threads)


def _call_worker(seed: int) -> Any:
    return _WORKER_JOB(seed)


class ProcessExecutor:
    """A pool of ``workers`` spawned processes; the job is sent once to each worker.

    A worker that dies breaks the whole pool: it is rebuilt and every seed that was in flight
    is charged one attempt and resubmitted (the pool cannot tell which seed killed it).
    """

    def __init__(self, workers: int = 2, retries: int = 2, threads_per_worker: int = 1):
        self.workers, self.retries, self.threads = workers, retries, threads_per_worker

    def run(self, job: Callable[[int], Any], seeds: Sequence[int], on_result: OnResult) -> None:
        attempts = {s: 0 for s in seeds}
        errors: dict[int, str] = {}
        todo = list(seeds)
        ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and locks
        while todo:
            with cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(job, self.threads, os.getpid())) as pool:
                futures = {pool.submit(_call_worker, s): s for s in todo}
                todo = []
                try:
                    self._collect(futures, attempts, errors, todo, on_result)
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)  # e.g. Ctrl-C: drop queued seeds
                    raise
        if errors:
            raise TaskFailed(errors)

    def _collect(self, futures, attempts, errors, todo, on_result) -> None:
        for fut in cf.as_completed(futures):
            seed = futures[fut]
            try:
                result = fut.result()
            except Exception as e:
                attempts[seed] += 1
                text = "".join(traceback.format_exception(e))
                if isinstance(e, cf.process.BrokenProcessPool):
                    text = f"worker process died (attempt {attempts[seed]}): {e}"
                errors[seed] = text
                if attempts[seed] <= self.retries:
                    todo.append(seed)
                continue
            errors.pop(seed, None)
            on_result(seed, result)


class RayExecutor:
    """Seed tasks on Ray: ``address`` names an existing cluster ("auto", "ray://head:10001"); empty
    starts a local one with ``workers`` CPUs. Ray retries a task whose worker dies or that raises
    (``max_retries=retries``, ``retry_exceptions=True``); results stream back with ``ray.wait``.
    """

    def __init__(self, address: str = "", workers: int = 2, retries: int = 2, num_cpus: float = 1,
                 num_gpus: float = 0, threads_per_worker: int = 1):
        self.address, self.workers, self.retries = address, workers, retries
        self.num_cpus, self.num_gpus, self.threads = num_cpus, num_gpus, threads_per_worker

    def run(self, job: Callable[[int], Any], seeds: Sequence[int], on_result: OnResult) -> None:
        try:
            import ray
        except ImportError:
            raise RuntimeError("executor 'ray' needs the ray package: pip install 'dtda[ray]'") from None
        started = False
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address)
            else:
                ray.init(num_cpus=self.workers, include_dashboard=False)
            started = True
        try:
            task = ray.remote(_ray_task).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus,
                                                 max_retries=self.retries, retry_exceptions=True)
            job_ref = ray.put(job)
            pending = {task.remote(job_ref, s, self.threads): s for s in seeds}
            errors: dict[int, str] = {}
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    seed = pending.pop(done[0])
                    try:
                        result = ray.get(done[0])
                    except Exception as e:  # RayTaskError, WorkerCrashedError, ...: retries are spent
                        errors[seed] = "".join(traceback.format_exception(e))
                        continue
                    on_result(seed, result)
            except BaseException:
                for ref in pending:  # the reduction stopped (an error, Ctrl-C): free the cluster
                    ray.cancel(ref)
                raise
            if errors:
                raise TaskFailed(errors)
        finally:
            if started:
                ray.shutdown()


def _ray_task(job: Callable[[int], Any], seed: int, threads: int) -> Any:
    keep_freed_memory()  # Ray reuses its worker processes: setting it again costs nothing
    torch.set_num_threads(threads)
    return job(seed)


def make(executor: str, *, workers: int = 2, retries: int = 2, threads_per_worker: int = 1, address: str = "",
         num_cpus: float = 1, num_gpus: float = 0):
    """The executor named ``executor`` ("local", "process" or "ray") with these settings."""
    if executor == "local":
        return LocalExecutor(retries)
    if executor == "process":
        return ProcessExecutor(workers, retries, threads_per_worker)
    if executor == "ray":
        return RayExecutor(address, workers, retries, num_cpus, num_gpus, threads_per_worker)
    raise ValueError(f"executor must be 'local', 'process' or 'ray', got {executor!r}")


__all__ = ["LocalExecutor", "ProcessExecutor", "RayExecutor", "TaskFailed", "make"]
