"""``dtda confirm`` and ``dtda evaluate`` on a tiny run: outputs, the retrain cache, argument errors."""

import json

from dtda import cli


def test_confirm_and_evaluate_write_beside_the_report(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", str(tiny), "--out", str(out), "--quiet"]) == 0
    assert cli.main(["confirm", str(out), "--top", "2", "--by", "abs_mean", "--query", "0", "--quiet"]) == 0
    folder = out / "checks" / "confirm" / "top2-abs_mean-q0-masked"
    assert {"confirm.md", "confirm.json", "confirm.png"} <= {p.name for p in folder.iterdir()}
    rows = json.loads((folder / "confirm.json").read_text())["rows"]
    assert len(rows) == 2 and {"mean", "var_increase", "w2", "per_seed_corr", "line"} <= set(rows[0])
    md = (folder / "confirm.md").read_text()
    assert "## Verdicts" in md and "output[test 10]" in md
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1  # every row has the header's columns
    cached = len(list((out / "retrain").rglob("*.safetensors")))
    assert cached == 3 * 3  # the removal and two null controls, 3 seeds each
    assert cli.main(["confirm", str(out), "--examples", "1,4", "--mode", "subset", "--controls", "random",
                     "--quiet"]) == 0
    assert cli.main(["evaluate", str(out), "--subsets", "4", "--stat", "mean,w2", "--quiet"]) == 0
    result = json.loads((out / "checks" / "evaluate" / "evaluate.json").read_text())
    assert [r["stat"] for r in result] == ["mean", "w2"] and result[0]["subsets"] == 4
    assert (out / "checks" / "evaluate" / "evaluate.png").is_file()
    assert cli.main(["verify", str(out)]) == 0  # outputs and cache are recorded in the manifest
    capsys.readouterr()
    assert cli.main(["confirm", str(out), "--examples", "1,x", "--quiet"]) == 2
    assert "--examples: expected comma-separated integers" in capsys.readouterr().err
    assert cli.main(["confirm", str(out), "--examples", "400", "--quiet"]) == 2
    assert cli.main(["evaluate", str(out), "--stat", "median", "--quiet"]) == 2
