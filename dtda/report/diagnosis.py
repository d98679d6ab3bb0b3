"""``dtda diagnose``'s output: the table and plot of :func:`dtda.attribute.diagnose` (PAPER Fig. 3)
in a directory of their own (``diagnose.md``, ``diagnose.json``, ``diagnose.png``), written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from dtda.attribute.diagnose import COLUMNS, Diagnosis
from dtda.report.render import Heading, Image, Para, Table, markdown
from dtda.rundir import atomic_dir

TEXT = ("For each seed and recorded checkpoint t, the run truncated at t was attributed twice: by exact "
        "reverse-mode unrolling through its first t steps, and by an influence function at θ_t. "
        "`correlation` is the Pearson correlation over training examples of the two predicted changes "
        "(the paper's Fig. 3: it rises towards 1 as training converges, faster for smaller learning rates); "
        "`null share` is the share of ∇m(θ_t) in the null space of the curvature, which influence functions "
        "drop (weight decay makes it 0).")


def _cell(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_diagnosis(out: Path, diagnosis: Diagnosis, plot: bool = True) -> Path:
    """Write ``out/`` (replacing an older one); ``plot`` needs matplotlib (the ``report`` extra)."""
    rows = [[_cell(row[c]) for c in COLUMNS] for row in diagnosis.rows]
    blocks = [Heading(1, f"Unrolling against influence-{diagnosis.method} along training"), Para(TEXT),
              Table(list(COLUMNS), rows)]
    with atomic_dir(out) as tmp:
        if plot:
            diagnosis.plot(tmp / "diagnose.png")
            blocks.append(Image("diagnose.png", "correlation and null-space share against the training step"))
        (tmp / "diagnose.md").write_text(markdown(blocks))
        (tmp / "diagnose.json").write_text(json.dumps({"method": diagnosis.method, "meta": diagnosis.meta,
                                                       "rows": diagnosis.rows}, indent=1, sort_keys=True,
                                                      default=str) + "\n")
    return out
