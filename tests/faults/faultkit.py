"""Helpers of the fault-injection suite: its configuration, digests of run files, ``dtda`` in a fresh
process (imported by the tests of this package)."""

import hashlib
import subprocess
import sys
from pathlib import Path

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


