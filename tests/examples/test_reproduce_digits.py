"""The digits reproductions of issue 10 in quick mode: they run and write consistent outputs.

Each script's ``--quick`` mode (4 seeds, 300 training images, 2 epochs) runs in this process into
a temporary folder; the checks are on the structure and internal consistency of what it writes,
not on the measured numbers (docs/results.md reports those from the full runs).
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VERDICTS = {"confirmed", "sign", "magnitude-off", "sign-contradicted", "unresolved", "not-confirmed", "below-floor"}


def run_script(name: str, *argv: str) -> None:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        assert module.main(list(argv)) == 0
    finally:
        torch.set_num_threads(threads)  # the scripts pin one thread


def test_variance_without_mean_quick(tmp_path):
    run_script("reproduce_variance_without_mean", "--quick", "--out", str(tmp_path), "--spread", "2")
    result = json.loads((tmp_path / "variance_without_mean.json").read_text())
    kinds = [e["kind"] for e in result["examples"].values()]
    assert kinds.count("spread without mean") == 2 and kinds.count("top mean shift") == 2
    assert kinds.count("random low effect") == 2
    rows = result["confirm"]["subset"]
    assert [r["examples"] for r in rows] == [[int(k)] for k in result["examples"]] + [sorted(result["group"])]
    assert len(result["group"]) == 8 and rows[-1]["kind"] == "spread group"
    assert all(r["measurement"] == result["measurement"] and r["var_increase"]["verdict"] in VERDICTS for r in rows)
    assert result["retrain_seeds"] == result["seeds"] == 4 and result["wall_s"] > 0
    for k, e in result["examples"].items():  # the report's criterion: |mean shift| at most the median
        if e["kind"] == "spread without mean":
            assert e["rank_abs_mean"] >= 300 // 2 - 1
    assert (tmp_path / "variance_without_mean.png").stat().st_size > 0
    assert (tmp_path / "variance_without_mean-subset" / "confirm.md").is_file()
    assert "## Retrained (subset mode)" in (tmp_path / "variance_without_mean.md").read_text()


def test_pruning_quick(tmp_path):
    run_script("reproduce_pruning", "--quick", "--out", str(tmp_path))
    result = json.loads((tmp_path / "pruning.json").read_text())
    names = list(result["strategies"])
    assert names == ["full data", "random 0.1", "seed-averaged 0.1", "distributional 0.1", "per seed 0.1"]
    for name, s in result["strategies"].items():
        values = torch.tensor(s["values"])
        assert values.shape == (4, 3) and ((values[:, 2] >= 0) & (values[:, 2] <= 1)).all()
        assert s["removed"] == (0 if name == "full data" else 30)
        lo, hi = s["summary"]["test accuracy"]["mean_ci"]
        assert lo <= s["summary"]["test accuracy"]["mean"] <= hi
    assert result["strategies"]["full data"]["summary"]["test loss"]["diff"] == 0
    assert 0 <= result["strategies"]["per seed 0.1"]["overlap_with_seed_averaged"] <= 1
    assert (tmp_path / "pruning.png").stat().st_size > 0 and "| per seed 0.1 |" in (tmp_path / "pruning.md").read_text()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_demo_floor_quick(tmp_path):
    run_script("reproduce_demo_floor", "--quick", "--out", str(tmp_path), "--per", "1")
    result = json.loads((tmp_path / "demo_floor.json").read_text())
    assert set(result["overview"]) == {"masked", "subset"}
    for per in result["overview"].values():
        for o in per.values():
            assert o["highlighted"] == len(result["rows"]) and o["floor_median"] <= o["floor_max"]
            assert o["confirmed"] + o["sign"] + o["below_floor"] <= o["highlighted"]
    for row in result["rows"]:
        assert row["masked"]["mean"]["verdict"] in VERDICTS and row["subset"]["w2"]["floor"] >= 0
    assert "| masked | var_increase |" in (tmp_path / "demo_floor.md").read_text()
