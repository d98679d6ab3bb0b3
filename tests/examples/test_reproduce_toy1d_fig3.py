"""The ``--quick`` modes of the issue-10 reproductions 1 (``examples/reproduce_toy1d.py``) and 2
(``examples/reproduce_fig3.py``) run and write a well-formed table, JSON and figure."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_quick(script: str, out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_toy1d_quick(tmp_path):
    run_quick("reproduce_toy1d.py", tmp_path)
    result = json.loads((tmp_path / "toy1d.json").read_text())
    assert result["quick"] and result["seeds"] == 6 and result["steps"] == 200 and result["wall_s"] > 0
    assert result["retrainings"]["already_cached"] == 0 < result["retrainings"]["total"]
    chosen = {result[name]["example"] for name in ("top_by_abs_mean", "top_by_w2", "spread_without_mean",
                                                   "top_by_shape_w2")}
    assert len(result["ranks"]) == 40 and all(1 <= r["w2"] <= 40 for r in result["ranks"].values())
    assert result["ranks"][f"#{result['top_by_w2']['example']}"]["w2"] == 1
    for mode in ("subset", "masked"):
        check = result["confirm"][mode]
        assert check["mode"] == mode and len(check["retrain_seeds"]) == 6
        assert {row["examples"][0] for row in check["rows"]} == chosen
        assert all(row["w2"]["verdict"] and row["mean"]["actual"] is not None for row in check["rows"])
    table = (tmp_path / "toy1d.md").read_text()
    assert "## Retrained (subset mode, 6 seeds)" in table and "## Retrained (masked mode, 6 seeds)" in table
    assert (tmp_path / "toy1d.png").read_bytes()[:4] == b"\x89PNG"


def test_fig3_quick(tmp_path):
    run_quick("reproduce_fig3.py", tmp_path)
    result = json.loads((tmp_path / "fig3.json").read_text())
    assert result["quick"] and result["lrs"] == [0.03, 0.003] and result["wall_s"] > 0
    assert len(result["summary"]) == 2 * len(result["checkpoints"])
    for row in result["summary"]:
        for damping in ("training-time", "pseudo-inverse"):
            c = row[damping]
            assert -1.0 <= c["min"] <= c["mean"] <= c["max"] <= 1.0
        assert 0.0 <= row["null_share"] <= 1.0
    assert {r["damping"] for r in result["rows"]} == {"training-time", "pseudo-inverse"}
    assert "| lr | step |" in (tmp_path / "fig3.md").read_text()
    assert (tmp_path / "fig3.png").read_bytes()[:4] == b"\x89PNG"
