"""Bad data gets one clear error before any work (or, for divergence, a failed seed).

Each case was a raw torch error deep in training, or silent garbage, before dtda checked it:
labels out of range, target shapes, integer or meta-device features, non-finite cells in data
files and test inputs, measurements without a gradient path, and training that diverges to
finite garbage. Tiny problems: the whole file runs in a few seconds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import dtda.train as T
from dtda import config, measure, sources
from dtda.attribute import unroll_member
from dtda.train.checks import TrainingDiverged
from dtda.train.lockstep import train_group_results


def _data(n=12, classes=4):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=gen, dtype=torch.float64), torch.randint(0, classes, (n,), generator=gen)


def _recipe(outputs=4, loss="cross_entropy", lr=0.1, **kw):
    return T.Recipe(model=lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, outputs)), loss=loss,
                    optimizer=T.SGD(lr), batch_size=4, epochs=2, dtype=torch.float64, **kw)


# ---- training data ------------------------------------------------------------------------------

def test_class_label_past_the_outputs_names_label_index_and_width():
    X, y = _data()
    y[5] = 7
    with pytest.raises(ValueError, match=r"label 7 at index 5 .*4 outputs"):
        T.train_member(_recipe(), (X, y), seed=0)


def test_negative_class_label():
    X, y = _data()
    y[2] = -1
    with pytest.raises(ValueError, match=r"label -1 at index 2"):
        T.train_member(_recipe(), (X, y), seed=0)


def test_mse_targets_must_match_the_outputs():
    X, _ = _data()
    with pytest.raises(ValueError, match=r"mse.*\[3\] per example.*outputs \[2\]"):
        T.train_member(_recipe(outputs=2, loss="mse"), (X, torch.randn(12, 3)), seed=0)
    # [N] targets for a model with one output are fine (reshaped like the outputs)
    T.train_member(_recipe(outputs=1, loss="mse"), (X, torch.randn(12)), seed=0)


def test_integer_features_for_a_float_model():
    X, y = _data()
    with pytest.raises(ValueError, match=r"integer features \(torch.int64\).*X.float\(\)"):
        T.train_member(_recipe(), ((X * 10).long(), y), seed=0)


def test_integer_features_for_an_embedding_are_kept():
    ids, y = torch.randint(0, 6, (12,)), torch.randint(0, 3, (12,))
    recipe = T.Recipe(model=lambda: nn.Sequential(nn.Embedding(6, 4), nn.Linear(4, 3)), loss="cross_entropy",
                      optimizer=T.SGD(0.1), batch_size=4, epochs=1, dtype=torch.float64)
    T.train_member(recipe, (ids, y), seed=0)


def test_meta_device_data():
    X, y = _data()
    with pytest.raises(ValueError, match=r"train: X is on the meta device"):
        T.train_member(_recipe(), (X.to("meta"), y), seed=0)


def test_non_finite_training_features_name_row_and_column():
    X, y = _data()
    X[4, 2] = float("inf")
    with pytest.raises(ValueError, match=r"train: X holds inf at \[4, 2\]"):
        T.train_member(_recipe(), (X, y), seed=0)


# ---- divergence ---------------------------------------------------------------------------------

def test_divergence_to_finite_garbage_fails_the_seed():
    X, y = _data(n=32)
    recipe = T.Recipe(model=lambda: nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 4)),
                      loss="cross_entropy", optimizer=T.SGD(500.0), batch_size=8, epochs=10, dtype=torch.float64)
    with pytest.raises(TrainingDiverged, match=r"seed 0: training diverged.*lower the learning rate") as e:
        T.train_member(recipe, (X, y), seed=0)
    assert isinstance(e.value, FloatingPointError)  # the run records it as a failed seed


def test_lockstep_groups_check_the_same():
    # Seeds trained together (dtda.train.lockstep) get the same checks as one at a time.
    X, y = _data(n=32)
    diverging = T.Recipe(model=lambda: nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 4)),
                         loss="cross_entropy", optimizer=T.SGD(500.0), batch_size=8, epochs=10,
                         dtype=torch.float64)
    results = train_group_results(diverging, (X, y), [0, 1])
    assert all(isinstance(r, TrainingDiverged) and "training diverged" in str(r) for r in results)
    y[5] = 7
    with pytest.raises(ValueError, match=r"label 7 at index 5 .*4 outputs"):
        train_group_results(_recipe(), (X, y), [0, 1])


def test_ordinary_training_is_not_divergence():
    X, y = _data(n=32)
    T.train_member(_recipe(lr=0.5), (X, y), seed=0)


# ---- measurements -------------------------------------------------------------------------------

def test_margin_test_label_out_of_range():
    X, y = _data()
    model = _recipe().build(0)
    y[3] = 4
    with pytest.raises(ValueError, match=r"margin: label 4 at index 3 .*4 outputs"):
        measure.margin(X, y)(model)


@pytest.mark.parametrize("make", [lambda X, y: measure.loss(X, y), lambda X, y: measure.margin(X, y),
                                  lambda X, y: measure.output(X)], ids=["loss", "margin", "output"])
def test_non_finite_test_inputs_are_refused_before_unrolling(make):
    X, y = _data()
    X[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"X holds nan at \[1, 0\]"):
        make(X, y)


def test_measurement_without_a_gradient_path():
    X, y = _data()
    recipe = _recipe()
    member = T.train_member(recipe, (X, y), seed=0)
    accuracy = measure.custom(lambda m: (m(X).argmax(1) == y).double())
    with pytest.raises(ValueError, match=r"no gradient path to the parameters"):
        unroll_member(recipe, (X, y), member, accuracy)


# ---- data files ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["nan", "inf", "-inf"])
def test_non_finite_csv_cell_names_line_and_column(tmp_path, cell):
    rows = ["a,b,label"] + [f"{i},{i * 2},{i % 2}" for i in range(10)]
    rows[4] = f"3,{cell},1"
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    cfg = config.validate({"data": {"source": "csv:d.csv", "target": "label"}}, tmp_path)["data"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning may leak
        with pytest.raises(sources.DataError, match=rf"d.csv:5: column 'b' holds {cell!r}, expected a finite"):
            sources.load(cfg)


def test_non_finite_npz_cell_names_row_and_column(tmp_path):
    X, y = np.random.default_rng(0).normal(size=(10, 3)), np.arange(10.0)
    X[6, 1] = np.nan
    np.savez(tmp_path / "d.npz", X=X, y=y)
    cfg = config.validate({"data": {"source": "d.npz", "features": "X", "target": "y"}}, tmp_path)["data"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(sources.DataError, match=r"d.npz: 'X' holds nan at row 6, column 1"):
            sources.load(cfg)
    y[2] = np.inf
    np.savez(tmp_path / "d.npz", X=np.nan_to_num(X), y=y)
    with pytest.raises(sources.DataError, match=r"d.npz: 'y' holds inf at row 2"):
        sources.load(cfg)


BAD_DATA_FUNCTIONS = {
    "broken_data": ("def make():\n    raise KeyError('columns')\n",
                    r"data.source 'broken_data:make' raised KeyError: 'columns'"),
    "nan_data": ("import torch\n"
                 "def make():\n"
                 "    X = torch.randn(10, 2)\n"
                 "    X[3, 1] = float('nan')\n"
                 "    return (lambda: torch.nn.Linear(2, 1)), (X, X.sum(1)), (X[:2].nan_to_num(), X[:2].sum(1).nan_to_num())\n",
                 r"nan_data:make train: X holds nan at \[3, 1\]"),
    "neg_data": ("import torch\n"
                 "def make():\n"
                 "    X, y = torch.randn(10, 2), torch.arange(10) % 3\n"
                 "    y[4] = -1\n"
                 "    return (lambda: torch.nn.Linear(2, 3)), (X, y), (X[:3], y[:3].abs())\n",
                 r"neg_data:make train: class label -1 at index 4 is negative"),
}


@pytest.mark.parametrize("module", sorted(BAD_DATA_FUNCTIONS))
def test_a_data_function_that_raises_or_returns_bad_tensors(tmp_path, monkeypatch, module):
    source, message = BAD_DATA_FUNCTIONS[module]
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = config.validate({"data": {"source": f"{module}:make"}})["data"]
    with pytest.raises(sources.DataError, match=message):
        sources.load(cfg)
