"""A run directory bound to one configuration by its fingerprint."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dtda.rundir import lock
from dtda.atomic import atomic_path, atomic_write_text
from dtda.rundir.errors import RunDirError
from dtda.rundir.manifest import NAME as MANIFEST
from dtda.rundir.manifest import Manifest
from dtda.train.record import member_path


def _is_temporary(name: str) -> bool:
    """Names of :mod:`dtda.atomic` temporaries (``.x.abc.tmp``, ``.report.abc.old``)."""
    return name.startswith(".") and name.endswith((".tmp", ".old"))


class RunDir:
    """Paths and atomic I/O of one run directory (layout in :mod:`dtda.rundir`).

    ``RunDir.create(path, config_toml, fingerprint)`` makes or reopens a directory for a
    configuration; ``RunDir.open(path)`` reopens an existing run for a later stage. Both lock the
    directory for this process (:mod:`dtda.rundir.lock`; :meth:`close` unlocks), remove the
    temporaries of an interrupted run and check the inputs that cannot be recomputed.
    ``RunDir(path)`` alone only reads (:meth:`verify`).
    """

    CONFIG = "config.toml"
    FINGERPRINT = "fingerprint"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._manifest: Manifest | None = None
        self._locked = False

    # ---- creation --------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, config_toml: str, fingerprint: str, force: bool = False,
               sources: Iterable[str | os.PathLike] = ()) -> "RunDir":
        """Make (or reopen, to resume) the run directory ``path`` for a configuration.

        A directory whose fingerprint differs, or a non-empty directory that is not a run, is
        refused with :class:`RunDirError`. With ``force`` such a directory is renamed aside to
        ``<path>.moved-<timestamp>`` (never deleted) and a fresh run starts at ``path``.
        ``sources``: files outside the run that the configuration reads (a CSV data file); the
        manifest records their sha256 with ``config.toml``.
        """
        run = cls(path)
        try:
            run._create(config_toml, fingerprint, force, sources)
        except BaseException:
            run.close()
            raise
        return run

    def _create(self, config_toml: str, fingerprint: str, force: bool, sources: Iterable[str | os.PathLike]) -> None:
        path = self.path
        if path.exists():
            self._lock()  # before looking: another driver may be writing it
        # A run killed between writing config.toml and the fingerprint left only those: not "in use".
        in_use = path.exists() and any(not (p.name in (self.CONFIG, MANIFEST) or p.name.startswith("."))
                                       for p in path.iterdir())
        if in_use:
            found = self.fingerprint()
            if found != fingerprint:
                if not force:
                    what = (f"was made for another configuration (fingerprint {found[:12]}, this config has "
                            f"{fingerprint[:12]}; compare its {self.CONFIG})") if found else "is not empty and is not a dtda run"
                    if found and (changed := self._changed_source()):
                        what = f"cannot be resumed: {changed}"
                    raise RunDirError(
                        f"run directory {path} {what}. Choose another --out directory, or pass --force to move "
                        f"the existing directory aside (to {path.name}.moved-<timestamp>) and start a new run.")
                moved = self.move_aside()
                print(f"--force: moved the existing directory to {moved}", file=sys.stderr)
            elif force:
                moved = self.move_aside()
                print(f"--force: moved the existing run to {moved}; starting again", file=sys.stderr)
        path.mkdir(parents=True, exist_ok=True)
        self._lock()
        if not (path / self.FINGERPRINT).exists():
            atomic_write_text(path / self.CONFIG, config_toml)
            atomic_write_text(path / self.FINGERPRINT, fingerprint + "\n")  # written last: marks the run as ours
            self.manifest.record([path / self.CONFIG, path / self.FINGERPRINT], inputs=sources)
        self._prepare()

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        """Reopen an existing run directory (for ``dtda train|attribute|report RUN_DIR``)."""
        run = cls(path)
        if not (run.path / cls.CONFIG).is_file() or run.fingerprint() is None:
            raise RunDirError(f"{run.path} is not a dtda run directory (no {cls.CONFIG} and {cls.FINGERPRINT}); "
                              f"start one with `dtda run CONFIG.toml --out {run.path}`")
        try:
            run._lock()
            run._prepare()
        except BaseException:
            run.close()
            raise
        return run

    def _lock(self) -> None:
        if not self._locked:
            lock.acquire(self.path)
            self._locked = True

    def close(self) -> None:
        """Unlock the directory (the lock also ends with the process)."""
        if self._locked:
            lock.release(self.path)
            self._locked = False

    def _prepare(self) -> None:
        """Remove an interrupted run's temporaries; refuse changed inputs that cannot be recomputed."""
        if self.manifest.unreadable:
            print(f"{self.manifest.unreadable}: no file of the run is trusted, each is recomputed", file=sys.stderr)
        stale = self.temporaries()
        for p in stale:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        if stale:
            print(f"{self.path}: removed {len(stale)} temporary file(s) left by an interrupted run: "
                  f"{', '.join(str(p.relative_to(self.path)) for p in stale)}", file=sys.stderr)
        changed = self._changed_source()
        if changed:
            raise RunDirError(f"run directory {self.path}: {changed}. Restore it, or start a new run (--force "
                              "moves this one aside)")
        sources = [self.config_path, self.path / self.FINGERPRINT]
        unrecorded = [p for p in sources if self.manifest.key(p) not in self.manifest.files]
        if unrecorded:  # a run made before manifests, or killed before recording them: the fingerprint vouches
            self.manifest.record(unrecorded)

    def _changed_source(self) -> str | None:
        """Why config.toml, the fingerprint or a data file they were made from is not what the run
        was made from (nothing can recompute those), or None."""
        for p in (self.config_path, self.path / self.FINGERPRINT):
            if self.manifest.key(p) in self.manifest.files and (why := self.manifest.problem(p)):
                return f"{p.name}: {why}; it cannot be recomputed"
        return None

    def temporaries(self) -> list[Path]:
        """Temporary files and directories of interrupted writes, anywhere in the run."""
        found = []
        for parent, dirs, files in os.walk(self.path):
            found += [Path(parent, n) for n in files + dirs if _is_temporary(n)]
            dirs[:] = [d for d in dirs if not _is_temporary(d)]
        return sorted(found)

    def fingerprint(self) -> str | None:
        f = self.path / self.FINGERPRINT
        return f.read_text(errors="replace").strip() if f.is_file() else None

    def move_aside(self) -> Path:
        """Rename the directory to ``<path>.moved-<timestamp>`` (unlocked first); returns the new path."""
        self.close()
        self._manifest = None
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
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = Manifest(self.path)
        return self._manifest

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    def member_dir(self, seed: int) -> Path:
        return self.path / "members" / str(seed)

    def member_path(self, seed: int) -> Path:
        return member_path(self.path, seed)

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
        member = self.member_path(seed)
        self.commit([self.shard_path(seed)], inputs=[member] if member.is_file() else [])

    def read_shard(self, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(m [Q], {method: delta [N, Q]}) of one seed."""
        t = load_file(str(self.shard_path(seed)))
        return t.pop("m"), {k.removeprefix("delta."): v for k, v in t.items()}

    # ---- JSON ------------------------------------------------------------------------------------

    def write_json(self, path: Path, obj, inputs: Iterable[Path] = ()) -> None:
        atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
        self.commit([path], inputs)

    def read_json(self, path: Path):
        return json.loads(path.read_text())

    # ---- the manifest: commit what is written, trust only what verifies --------------------------

    def commit(self, paths: Iterable[Path], inputs: Iterable[Path] = ()) -> None:
        """Record files just written (atomically) as derived from ``inputs``."""
        self.manifest.record(paths, inputs)

    def commit_tree(self, folder: Path, inputs: Iterable[Path] = ()) -> None:
        """Record every file under ``folder`` (a report just written), forgetting older entries there."""
        self.manifest.forget([self.path / k for k in self._recorded_under(folder)])
        self.commit(sorted(p for p in folder.rglob("*") if p.is_file()), inputs)

    def trusted(self, path: Path) -> bool:
        """Whether ``path`` verifies against the manifest. A file that does not (corrupted, truncated,
        unrecorded, stale) is removed and forgotten, with one line saying which and why, so that the
        caller recomputes it; a file never written is just False."""
        why = self.manifest.problem(path)
        if why is None:
            return True
        if why != "missing":
            print(f"{self.manifest.key(path)}: {why}; recomputing it", file=sys.stderr)
            if path.is_file():
                path.unlink()
            self.manifest.forget([path])
        return False

    def trusted_tree(self, folder: Path) -> bool:
        """Whether ``folder`` holds recorded files only, all verified (False, with a line, otherwise)."""
        recorded = self._recorded_under(folder)
        on_disk = {self.manifest.key(p) for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()
        why = {k: self.manifest.problem(self.path / k) for k in sorted(recorded | on_disk)}
        bad = {k: w for k, w in why.items() if w is not None}
        for k, w in bad.items():
            print(f"{k}: {w}; rewriting {folder.name}/", file=sys.stderr)
        return bool(recorded) and not bad

    def _recorded_under(self, folder: Path) -> set[str]:
        prefix = self.manifest.key(folder) + "/"
        return {k for k in self.manifest.files if k.startswith(prefix)}

    def verify(self) -> list[str]:
        """Every problem of the run directory, one line each (empty: every file verifies); changes nothing."""
        m = self.manifest
        problems = [m.unreadable] if m.unreadable else []
        for key in sorted(m.files):
            if why := m.problem(self.path / key):
                problems.append(f"{key}: {why}")
        problems += [f"{m.key(p)}: temporary file of an interrupted run (the next run removes it)"
                     for p in self.temporaries()]
        for parent, dirs, files in os.walk(self.path):
            dirs[:] = [d for d in dirs if not _is_temporary(d)]
            keys = [m.key(Path(parent, n)) for n in sorted(files) if not _is_temporary(n)]
            problems += [f"{k}: not recorded in the manifest" for k in keys
                         if k not in m.files and k not in (MANIFEST, lock.NAME)]
        return problems
