"""Fixtures of the fault-injection suite: a shrunk demo (digits, 3 seeds of a 32-unit MLP, 4 steps,
3 test digits), large enough that torch splits its sums over threads, small enough to run in seconds."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dtda import cli

HERE = Path(__file__).parent

CONFIG = """
[data]
source = "sklearn:digits"
max_train = 100
[model]
name = "mlp:32"
[train]
seeds = 3
lr = 0.03
batch_size = 64
steps = 4
[measure]
kind = "margin"
test = 3
[statistics]
bootstrap = 10
[report]
measurements = 1
top = 3
remove = 3
[execution]
executor = "{executor}"
workers = 2
retries = 0
"""

def pytest_collection_modifyitems(config, items):
    """The full kill matrix is opt-in (DTDA_SLOW=1): CI runs one kill per executor."""
    if os.environ.get("DTDA_SLOW") != "1":
        skip = pytest.mark.skip(reason="slow fault matrix: set DTDA_SLOW=1 to run it")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


RESULTS = ("samples.safetensors", "statistics.safetensors", "summary.json")
TIMEOUT_S = 300  # no subprocess of the suite may hang CI


def write_config(path: Path, executor: str = "local") -> Path:
    path.write_text(CONFIG.format(executor=executor))
    return path


def digests(run: Path, names=RESULTS) -> dict[str, str]:
    return {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in names}


def every_file(run: Path) -> dict[str, str]:
    """sha256 of every file in the run (the lock file aside), by relative path."""
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and p.name != ".lock"}


def dtda(*args: str, env: dict | None = None, script: str | None = None) -> subprocess.CompletedProcess:
    """``python -m dtda ARGS`` (or ``python SCRIPT ARGS``) in a fresh process, with a timeout."""
    cmd = [sys.executable, script, *args] if script else [sys.executable, "-m", "dtda", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


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
