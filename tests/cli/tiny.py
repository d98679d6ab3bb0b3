"""The tiny run configuration the CLI tests share (the 1-D toy, 3 seeds, 12 steps, 2 measurements)."""

from pathlib import Path

TINY = """
[data]
source = "toy:regression1d"
[model]
name = "mlp:8"
activation = "tanh"
[train]
seeds = {seeds}
lr = 0.01
batch_size = 8
steps = 12
[measure]
kind = "output"
test = [10, 5]
[statistics]
bootstrap = 20
[report]
measurements = 1
top = 3
remove = 3
"""


def write_tiny(path: Path, seeds: int = 3, extra: str = "") -> Path:
    path.write_text(TINY.format(seeds=seeds) + extra)
    return path
