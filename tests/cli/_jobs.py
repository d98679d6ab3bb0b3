"""Picklable jobs for the executor tests (imported by spawned processes and Ray workers)."""

import os
from dataclasses import dataclass


@dataclass
class Square:
    """Returns seed²; with ``marker_dir`` the first attempt at seed 1 kills its worker process."""

    marker_dir: str = ""

    def __call__(self, seed: int) -> int:
        if self.marker_dir and seed == 1:
            marker = os.path.join(self.marker_dir, "killed-once")
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(3)  # a hard death: no exception, no cleanup
        return seed * seed


@dataclass
class KillOnce:
    """Wraps a job; the first attempt at ``seed`` (or a group holding it) kills its worker process."""

    inner: object
    marker_dir: str
    seed: int = 1

    def __call__(self, seed):
        marker = os.path.join(self.marker_dir, f"killed-{self.seed}")
        if self.seed in (seed if isinstance(seed, tuple) else (seed,)) and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)
        return self.inner(seed)


def refault_pages(_seed=None) -> int:
    """Page faults of allocating, filling and freeing two 16 MB blocks, three times, after once
    (glibc by default gives the freed 32 MB back and faults it in again every time)."""
    import resource

    import torch

    faults = 0
    for cycle in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.empty(4 << 20).fill_(1.0) for _ in range(2)]
        del blocks
        faults += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) if cycle else 0
    return faults
