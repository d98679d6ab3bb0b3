"""Fixtures of the fault-injection suite: a shrunk demo (digits, 3 seeds of a 32-unit MLP, 4 steps,
3 test digits), large enough that torch splits its sums over threads, small enough to run in seconds."""

import shutil
from pathlib import Path

import pytest
from .faultkit import write_config

from dtda import cli


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted run with the local executor (in this process: seed tasks and statistics run
    with ``train.threads`` threads, so a fresh process gives the same bits)."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "run"
    assert cli.main(["run", str(write_config(root / "c.toml")), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def run_copy(reference, tmp_path) -> Path:
    """A copy of the reference run to damage."""
    return Path(shutil.copytree(reference, tmp_path / "run"))
