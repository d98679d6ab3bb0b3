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
