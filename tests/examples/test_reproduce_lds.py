"""examples/reproduce_lds_table.py --quick: every method × statistic × α scored and written."""

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "reproduce_lds_table.py"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_quick_mode_writes_the_table_figure_and_json(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    main = runpy.run_path(str(SCRIPT))["main"]
    assert main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "lds-table-quick.json").read_text())
    methods = {"unroll", "identity", "diagonal", "kfac", "ekfac", "exact", "cg", "lissa", "astra", "source"}
    assert set(results["datasets"]) == {"digits", "diabetes"}
    for name, r in results["datasets"].items():
        assert set(r["seconds_per_seed"]) == methods and all(v > 0 for v in r["seconds_per_seed"].values())
        assert set(r["alphas"]) == {"0.5", "0.9", "0.99"}
        for alpha, a in r["alphas"].items():
            assert a["retrained_runs"] == a["subsets"] * a["retrain_seeds"]  # once per (dataset, α), then cached
            assert set(a["scores"]) == methods
            for method, scores in a["scores"].items():
                assert set(scores) == {"mean", "var_increase", "w2", "shape_w2"}
                mean = scores["mean"]
                assert -1 <= mean["score"] <= 1 and mean["ci"][0] <= mean["score"] <= mean["ci"][1]
                # one ground truth per (dataset, α): every method gets the same noise ceiling
                assert mean["noise_ceiling"] == a["scores"]["unroll"]["mean"]["noise_ceiling"]
    # At α = 0.5 the mean-shift ranking of subsets is easy: unrolling must find it.
    assert results["datasets"]["digits"]["alphas"]["0.5"]["scores"]["unroll"]["mean"]["score"] > 0.5
    table = (tmp_path / "lds-table-quick.md").read_text()
    assert "noise ceiling" in table and "| exact |" in table
    assert (tmp_path / "lds-table-quick.png").stat().st_size > 10_000
