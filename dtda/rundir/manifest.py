"""The run's manifest: every committed file with its sha256, its size and what it was derived from.

``<run>/manifest.json``::

    {"format": "dtda-manifest-1", "sha256": "<sha256 of the files table as canonical JSON>",
     "files": {"shards/3.safetensors": {"sha256": "…", "size": 1234,
                                        "inputs": {"members/3/member.safetensors": "<its sha256>"}}, …}}

Keys are paths relative to the run directory; an input outside it (a CSV data file) is keyed by
its absolute path. A file is *trusted* when it is recorded, its size and sha256 match the record,
and every input it was derived from still has the sha256 it had then (a recomputed input with
other bits makes everything derived from it stale). Only the driver writes the manifest, after
each committed file (atomic write, then the manifest, itself written atomically): workers return
results or write files that the driver then records. A file killed between its write and its
record is untrusted, so it is recomputed; nothing untrusted is ever read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from dtda.atomic import atomic_write_text

NAME = "manifest.json"
FORMAT = "dtda-manifest-1"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Manifest:
    """The manifest of run directory ``root`` (read once; :meth:`record` and :meth:`forget` rewrite it)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / NAME
        self.files: dict[str, dict] = {}
        self.unreadable: str | None = None  # why manifest.json could not be read (then nothing is trusted)
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
                    raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
                if data.get("sha256") != _digest(data["files"]):
                    raise ValueError("its own checksum does not match its contents")
                self.files = {k: {"sha256": str(e["sha256"]), "size": int(e["size"]), "inputs": dict(e["inputs"])}
                              for k, e in data["files"].items()}
            except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
                self.files, self.unreadable = {}, f"{NAME} is unreadable ({type(e).__name__}: {e})"

    def key(self, path: str | os.PathLike) -> str:
        """``path`` relative to the run directory (posix), or absolute if it lies outside."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))
        return os.path.abspath(path) if rel.startswith("..") else Path(rel).as_posix()

    def record(self, paths: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike] = ()) -> None:
        """Record the committed files ``paths`` as derived from ``inputs`` (recorded, or outside the run)."""
        derived_from = {}
        for p in inputs:
            k = self.key(p)
            derived_from[k] = self.files[k]["sha256"] if k in self.files else sha256_file(p)
        for p in paths:
            self.files[self.key(p)] = {"sha256": sha256_file(p), "size": os.path.getsize(p), "inputs": derived_from}
        self._save()

    def forget(self, paths: Iterable[str | os.PathLike]) -> None:
        keys = [k for k in map(self.key, paths) if k in self.files]
        for k in keys:
            del self.files[k]
        if keys:
            self._save()

    def problem(self, path: str | os.PathLike) -> str | None:
        """Why ``path`` cannot be trusted (missing, unrecorded, truncated, corrupted, stale), or None."""
        k = self.key(path)
        entry, exists = self.files.get(k), os.path.isfile(path)
        if entry is None:
            return "not recorded in the manifest (written by an interrupted run, or put there by hand)" \
                if exists else "missing"
        if not exists:
            return "missing (recorded in the manifest)"
        size = os.path.getsize(path)
        if size != entry["size"]:
            return f"{size} bytes, the manifest recorded {entry['size']} (truncated or overwritten)"
        if sha256_file(path) != entry["sha256"]:
            return "sha256 differs from the manifest (the file is corrupted)"
        for name, sha in entry["inputs"].items():
            now = self.files.get(name, {}).get("sha256") if not os.path.isabs(name) else \
                (sha256_file(name) if os.path.isfile(name) else None)
            if now != sha:
                return f"its input {name} has changed since it was recorded"
        return None

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps({"format": FORMAT, "sha256": _digest(self.files), "files": self.files},
                                                indent=1, sort_keys=True) + "\n")


def _digest(files: dict) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
