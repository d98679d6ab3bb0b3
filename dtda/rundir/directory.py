"""A run directory bound to one configuration by its fingerprint."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dtda.rundir.atomic import atomic_path, atomic_write_text


class RunDirError(RuntimeError):
    """The directory cannot be used for this configuration (made for another, or not a run)."""


class RunDir:
    """Paths and atomic I/O of one run directory (layout in :mod:`dtda.rundir`).

    ``RunDir.create(path, config_toml, fingerprint)`` makes or reopens a directory for a
    configuration; ``RunDir.open(path)`` reopens an existing run for a later stage.
    """

    CONFIG = "config.toml"
    FINGERPRINT = "fingerprint"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # ---- creation --------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, config_toml: str, fingerprint: str, force: bool = False) -> "RunDir":
        """Make (or reopen, to resume) the run directory ``path`` for a configuration.

        A directory whose fingerprint differs, or a non-empty directory that is not a run, is
        refused with :class:`RunDirError`. With ``force`` such a directory is renamed aside to
        ``<path>.moved-<timestamp>`` (never deleted) and a fresh run starts at ``path``.
        """
        path = Path(path)
        run = cls(path)
        # A run killed between writing config.toml and the fingerprint left only those: not "in use".
        in_use = path.exists() and any(not (p.name == cls.CONFIG or p.name.startswith(".")) for p in path.iterdir())
        if in_use:
            found = run.fingerprint()
            if found != fingerprint:
                if not force:
                    what = (f"was made for another configuration (fingerprint {found[:12]}, this config has "
                            f"{fingerprint[:12]}; compare its {cls.CONFIG})") if found else "is not empty and is not a dtda run"
                    raise RunDirError(
                        f"run directory {path} {what}. Choose another --out directory, or pass --force to move "
                        f"the existing directory aside (to {path.name}.moved-<timestamp>) and start a new run.")
                moved = run.move_aside()
                print(f"--force: moved the existing directory to {moved}", file=sys.stderr)
            elif force:
                moved = run.move_aside()
                print(f"--force: moved the existing run to {moved}; starting again", file=sys.stderr)
        path.mkdir(parents=True, exist_ok=True)
        if not (path / cls.FINGERPRINT).exists():
            atomic_write_text(path / cls.CONFIG, config_toml)
            atomic_write_text(path / cls.FINGERPRINT, fingerprint + "\n")  # written last: marks the run as ours
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        """Reopen an existing run directory (for ``dtda train|attribute|report RUN_DIR``)."""
        run = cls(path)
        if not (run.path / cls.CONFIG).is_file() or run.fingerprint() is None:
            raise RunDirError(f"{run.path} is not a dtda run directory (no {cls.CONFIG} and {cls.FINGERPRINT}); "
                              f"start one with `dtda run CONFIG.toml --out {run.path}`")
        return run

    def fingerprint(self) -> str | None:
        f = self.path / self.FINGERPRINT
        return f.read_text().strip() if f.is_file() else None

    def move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.moved-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.moved-{stamp}-{n}")
            n += 1
        os.replace(self.path, target)
        return target

    # ---- paths -----------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    def member_dir(self, seed: int) -> Path:
        return self.path / "members" / str(seed)

    def shard_path(self, seed: int) -> Path:
        return self.path / "shards" / f"{seed}.safetensors"

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.safetensors"

    def compare_path(self, method: str) -> Path:
        """The SeedSamples of a method the run compares with its main one (``attribute.compare``)."""
        return self.path / f"samples.{method}.safetensors"

    @property
    def agreement_path(self) -> Path:
        return self.path / "agreement.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def failures_path(self) -> Path:
        return self.path / "failures.json"

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    # ---- per-seed shards -------------------------------------------------------------------------

    def write_shard(self, seed: int, m: torch.Tensor, deltas: dict[str, torch.Tensor]) -> None:
        """Store one seed's attribution: ``m`` [Q] and, per method, ``delta.<method>`` [N, Q]."""
        tensors = {"m": m, **{f"delta.{method}": d for method, d in deltas.items()}}
        with atomic_path(self.shard_path(seed)) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))

    def read_shard(self, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(m [Q], {method: delta [N, Q]}) of one seed."""
        t = load_file(str(self.shard_path(seed)))
        return t.pop("m"), {k.removeprefix("delta."): v for k, v in t.items()}

    def has_shard(self, seed: int) -> bool:
        return self.shard_path(seed).is_file()

    # ---- JSON ------------------------------------------------------------------------------------

    def write_json(self, path: Path, obj) -> None:
        atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")

    def read_json(self, path: Path):
        return json.loads(path.read_text())
