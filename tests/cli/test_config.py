"""Configuration validation, data sources and model factories (no training)."""

import numpy as np
import pytest
import torch

from dtda import cli, config, sources, models

BAD = """
[data]
source = "sklearn:digitz"
colour = "red"
[train]
lr = -1
seeds = 1
batch_size = "64"
optimizer = "adam"
[extra]
x = 1
"""


def test_bad_config_reports_every_problem_with_exit_code_2(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    assert cli.main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    for expected in ("[extra]: unknown section", "data.colour: unknown key", "data.source: unknown built-in",
                     "train.lr: expected a finite number > 0, found -1.0", "train.seeds: expected",
                     "train.batch_size: expected integer", "train.optimizer: expected one of 'sgd', 'adamw'"):
        assert expected in err
    assert "7 problem(s)" in err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_missing_files_and_modules_are_config_errors(tmp_path):
    with pytest.raises(config.ConfigError) as e:
        config.validate({"data": {"source": "csv:nope.csv"}, "model": {"name": "no_such_module_xyz:f"}}, tmp_path)
    assert len(e.value.problems) == 2
    assert "file not found" in e.value.problems[0] and "cannot import" in e.value.problems[1]


def test_resolved_config_round_trips_through_toml():
    import tomllib

    resolved = config.validate({"data": {"source": "sklearn:iris"}, "train": {"seeds": [3, 1, 2]}})
    assert config.validate(tomllib.loads(config.to_toml(resolved))) == resolved
    assert config.seed_list(resolved) == [3, 1, 2]


def test_csv_and_npz_with_named_targets(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
    lines = ["a,label,b,c"] + [f"{r[0]},{t},{r[1]},{r[2]}" for r, t in zip(X, y)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    np.savez(tmp_path / "d.npz", feats=X, target=y)
    c = config.validate({"data": {"source": "csv:d.csv", "target": "label"}}, tmp_path)["data"]
    d = sources.load(c)
    assert d.task == "classification" and d.n_outputs == 3 and d.X_train.shape == (24, 3) and len(d.y_test) == 6
    c = config.validate({"data": {"source": "d.npz", "features": "feats", "target": "target",
                                  "task": "regression"}}, tmp_path)["data"]
    d2 = sources.load(c)
    assert d2.task == "regression" and d2.y_train.dtype == torch.float32
    with pytest.raises(sources.DataError, match="'nope' not in the header"):
        sources.load({**config.validate({"data": {"source": "csv:d.csv"}}, tmp_path)["data"], "target": "nope"})


def test_module_function_data(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "def make():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    X = torch.randn(20, 2, generator=g)\n"
        "    return (lambda: torch.nn.Linear(2, 1)), (X[:15], X[:15].sum(1)), (X[15:], X[15:].sum(1))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    c = config.validate({"data": {"source": "mydata:make"}})
    d = sources.load(c["data"])
    assert d.task == "regression" and d.model_factory is not None and d.X_test.shape == (5, 2)


def test_toy_regression1d_matches_the_paper():
    d = sources.load(config.validate({"data": {"source": "toy:regression1d"}})["data"])
    x = d.X_train[:, 0].abs()
    assert d.X_train.shape == (40, 1) and bool(((x >= 1) & (x <= 4)).all())
    assert float(d.X_test[10, 0]) == 0.0


def test_builtin_models():
    net = models.factory("mlp:16,8", 4, 3)()
    assert net(torch.zeros(2, 4)).shape == (2, 3)
    assert len([m for m in net if isinstance(m, torch.nn.Linear)]) == 3
    assert models.factory("linear", 4, 1)()(torch.zeros(2, 4)).shape == (2, 1)


# ---- one line for each common mistake on the command line ---------------------------------------

def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_out_naming_an_existing_file(tiny, tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    assert cli.main(["run", str(tiny), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err  # the configuration-error format: a header, then one line per problem
    assert "Traceback" not in err and f"  - --out: {out} is a file, not a run directory" in err.splitlines()[1]
    assert out.read_text() == "keep me"


def test_data_function_that_raises_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "raising_data.py").write_text("def make():\n    raise RuntimeError('database is down')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "c.toml").write_text('[data]\nsource = "raising_data:make"\n')
    assert cli.main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "data.source 'raising_data:make' raised RuntimeError: database is down; fix the function" in line


def test_unwritable_run_directory_for_report_is_one_line(tiny, tmp_path, monkeypatch, capsys):
    # Root ignores permission bits, so the refusal of the file system is simulated where the
    # report stage writes.
    from dtda import pipeline

    out = tmp_path / "run"
    pipeline.Run.create(config.load(tiny), out)
    target = out / "report"

    def refuse(self, force=True):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(pipeline.Run, "report", refuse)
    assert cli.main(["report", str(out)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert f"cannot write {target}: Permission denied. Every file written before is intact" in line


def test_the_digits_example_is_the_demo():
    """examples/digits.toml says it is the demo as a config file: it must stay so."""
    import tomllib
    from pathlib import Path

    from dtda import demo

    path = Path(__file__).parents[2] / "examples" / "digits.toml"
    assert config.validate(tomllib.loads(path.read_text())) == config.validate(demo.config())
