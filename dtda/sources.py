"""Data for runs: scikit-learn's bundled sets, the paper's 1-D toy, CSV/NPZ files, Python functions.

Every source becomes a :class:`TaskData`: training and test tensors, the task (classification or
regression) and, for images, the image shape. Nothing here touches the network: scikit-learn's
``load_*`` sets ship inside the package, and the toy set is generated from ``split_seed``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dtda.train import checks


@dataclass
class TaskData:
    """Train and test tensors of one task.

    ``X_train`` [N, D] float, ``y_train`` [N] (int64 classes or float targets), likewise the test
    split; ``task`` is "classification" or "regression"; ``n_outputs`` is the number of classes or
    1; ``image_shape`` (h, w) when each row is an image; ``model_factory`` when the source supplied
    its own model (``module:function`` data).
    """

    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor
    task: str
    n_outputs: int
    name: str
    image_shape: tuple[int, int] | None = None
    images_train: Tensor | None = None
    model_factory: Callable[[], torch.nn.Module] | None = None

    @property
    def n_features(self) -> int:
        return int(self.X_train[0].numel())


class DataError(ValueError):
    """The data source could not be read or does not fit the configuration."""


def load(data_cfg: dict, dtype: torch.dtype = torch.float32) -> TaskData:
    """Load and split the data described by a resolved ``[data]`` section."""
    src = data_cfg["source"]
    kind, _, rest = src.partition(":")
    if kind == "sklearn":
        X, y, image_shape = _sklearn(rest)
    elif src == "toy:regression1d":
        return _toy_regression1d(data_cfg, dtype)
    elif kind == "csv":
        X, y, image_shape = (*_csv(Path(rest), data_cfg["target"]), None)
    elif kind == "npz":
        X, y, image_shape = (*_npz(Path(rest), data_cfg["features"], data_cfg["target"]), None)
    else:
        return _from_function(src, data_cfg, dtype)
    task = _task(data_cfg["task"], y, src)
    return _split(X, y, task, data_cfg, dtype, src, image_shape)


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    try:
        import sklearn.datasets as ds
    except ImportError:
        raise DataError("sklearn:* data needs scikit-learn: pip install 'dtda[data]'") from None
    X, y = getattr(ds, f"load_{name}")(return_X_y=True)
    return X, y, (8, 8) if name == "digits" else None


def _csv(path: Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise DataError(f"{path}: expected a header row and at least one data row, found {len(rows)} row(s)")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise DataError(f"{path}: data.target column {target!r} not in the header; columns: {', '.join(header)}")
    values = np.empty((len(rows) - 1, len(header)))
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{r}: expected {len(header)} fields, found {len(row)}")
        for c, cell in enumerate(row):
            try:
                values[r - 2, c] = float(cell)
            except ValueError:
                raise DataError(f"{path}:{r}: column {header[c]!r} holds {cell!r}, expected a number") from None
            if not math.isfinite(values[r - 2, c]):  # before standardisation spreads it to every row
                raise DataError(f"{path}:{r}: column {header[c]!r} holds {cell!r}, expected a finite number; "
                                "remove the row or impute the value")
    t = header.index(target)
    return np.delete(values, t, axis=1), values[:, t]


def _npz(path: Path, features: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        for key, role in ((features, "data.features"), (target, "data.target")):
            if key not in z.files:
                raise DataError(f"{path}: {role} array {key!r} not found; arrays: {', '.join(z.files)}")
        X, y = z[features], z[target]
    if len(X) != len(y):
        raise DataError(f"{path}: {features!r} has {len(X)} rows but {target!r} has {len(y)}")
    X, y = X.reshape(len(X), -1), y.reshape(len(y))
    for key, a in ((features, X), (target, y)):
        _require_finite(a, f"{path}: {key!r}")
    return X.astype(np.float64), y


def _require_finite(a: np.ndarray, what: str) -> None:
    """DataError naming the first NaN/Inf of ``a`` [N] or [N, D] (row, column), before any
    statistics are computed from it (standardisation would spread it to every example)."""
    if not np.issubdtype(a.dtype, np.number):
        return
    bad = ~np.isfinite(a)
    if bad.any():
        index = np.argwhere(bad)[0]
        where = f"row {index[0]}" + (f", column {index[1]}" if a.ndim > 1 else "")
        raise DataError(f"{what} holds {a[tuple(index)]} at {where} ({int(bad.sum())} non-finite value(s)); "
                        "remove those rows or impute the values")


def _task(task: str, y: np.ndarray, src: str) -> str:
    integral = np.issubdtype(y.dtype, np.integer) or bool(np.all(np.equal(np.mod(y, 1), 0)))
    if task == "auto":
        return "classification" if integral and len(np.unique(y)) <= 100 else "regression"
    if task == "classification" and not integral:
        raise DataError(f"data.task = 'classification' but the targets of {src} are not integers")
    return task


def _split(X: np.ndarray, y: np.ndarray, task: str, cfg: dict, dtype: torch.dtype, name: str,
           image_shape: tuple[int, int] | None) -> TaskData:
    """Random train/test split (seeded by ``split_seed``), then standardise with training statistics."""
    n = len(X)
    perm = np.random.default_rng(cfg["split_seed"]).permutation(n)
    n_test = math.ceil(cfg["test_fraction"] * n)
    if n_test < 1 or n - n_test < 2:
        raise DataError(f"{name}: {n} examples cannot be split with data.test_fraction = {cfg['test_fraction']}")
    test, train = perm[:n_test], perm[n_test:]
    if cfg["max_train"]:
        train = train[: cfg["max_train"]]
    X_tr, X_te = X[train].astype(np.float64), X[test].astype(np.float64)
    if cfg["standardize"]:
        mu, sd = X_tr.mean(0), X_tr.std(0)
        sd[sd == 0] = 1.0
        X_tr, X_te = (X_tr - mu) / sd, (X_te - mu) / sd
    if task == "classification":
        classes, y_all = np.unique(y, return_inverse=True)
        y_tr, y_te = torch.as_tensor(y_all[train], dtype=torch.int64), torch.as_tensor(y_all[test], dtype=torch.int64)
        n_out = len(classes)
    else:
        yt, ye = y[train].astype(np.float64), y[test].astype(np.float64)
        if cfg["standardize"]:
            mu, sd = yt.mean(), yt.std() or 1.0
            yt, ye = (yt - mu) / sd, (ye - mu) / sd
        y_tr, y_te = torch.as_tensor(yt, dtype=dtype), torch.as_tensor(ye, dtype=dtype)
        n_out = 1
    images = torch.as_tensor(X[train].reshape(len(train), *image_shape)) if image_shape else None
    return TaskData(torch.as_tensor(X_tr, dtype=dtype), y_tr, torch.as_tensor(X_te, dtype=dtype), y_te,
                    task, n_out, name, image_shape, images)


def _toy_regression1d(cfg: dict, dtype: torch.dtype) -> TaskData:
    """PAPER §9 ``toy1d``: N = 40, x ~ U([−4,−1] ∪ [1,4]), y = sin x + 0.1 ε.

    The test set is the noise-free grid x = −5, −4.5, …, 5 (21 points; index 10 is x = 0, in the gap).
    """
    g = np.random.default_rng(cfg["split_seed"])
    n = cfg["max_train"] or 40
    x = g.uniform(1.0, 4.0, n) * np.where(g.random(n) < 0.5, -1.0, 1.0)
    y = np.sin(x) + 0.1 * g.standard_normal(n)
    xt = np.linspace(-5.0, 5.0, 21)
    as_t = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return TaskData(as_t(x[:, None]), as_t(y), as_t(xt[:, None]), as_t(np.sin(xt)), "regression", 1,
                    "toy:regression1d")


def _from_function(spec: str, cfg: dict, dtype: torch.dtype) -> TaskData:
    """``module:function`` returning ``(model_factory, train, test)``; train/test are (X, y) or Datasets."""
    from dtda.config import import_callable

    try:
        out = import_callable(spec)()
    except Exception as e:  # the user's function failed: one line naming it and its error
        raise DataError(f"data.source {spec!r} raised {type(e).__name__}: {e}; fix the function "
                        f"(call it in Python to see the traceback)") from e
    if not (isinstance(out, tuple) and len(out) == 3 and callable(out[0])):
        raise DataError(f"data.source {spec!r} must return (model_factory, train, test), got {type(out).__name__}")
    factory, train, test = out
    X_tr, y_tr = _as_xy(train, f"{spec} train")
    X_te, y_te = _as_xy(test, f"{spec} test")
    classification = not y_tr.is_floating_point()
    task = cfg["task"] if cfg["task"] != "auto" else ("classification" if classification else "regression")
    if task == "classification":
        y_tr, y_te = y_tr.long(), y_te.long()
        for part, y in (("train", y_tr), ("test", y_te)):
            if len(y) and int(y.min()) < 0:
                i = int((y < 0).nonzero()[0, 0])
                raise DataError(f"{spec} {part}: class label {int(y[i])} at index {i} is negative; classes "
                                "must be numbered 0, 1, ..., C − 1")
        n_out = int(max(y_tr.max(), y_te.max())) + 1
    else:
        y_tr, y_te = y_tr.to(dtype), y_te.to(dtype)
        n_out = 1
    return TaskData(X_tr.to(dtype), y_tr, X_te.to(dtype), y_te, task, n_out, spec, model_factory=factory)


def _as_xy(part, what: str) -> tuple[Tensor, Tensor]:
    if isinstance(part, (tuple, list)) and len(part) == 2 and all(isinstance(t, Tensor) for t in part):
        X, y = part
    elif hasattr(part, "__getitem__") and hasattr(part, "__len__"):  # a map-style torch Dataset
        items = [part[i] for i in range(len(part))]
        X = torch.stack([torch.as_tensor(x) for x, _ in items])
        y = torch.stack([torch.as_tensor(t) for _, t in items])
    else:
        raise DataError(f"{what}: expected an (X, y) pair of tensors or a map-style Dataset, got {type(part).__name__}")
    if len(X) != len(y):
        raise DataError(f"{what}: X has {len(X)} rows but y has {len(y)}")
    try:
        checks.tensors(X, y, what)  # data on the meta device, NaN/Inf: before anything is trained
    except ValueError as e:
        raise DataError(str(e)) from None
    return X, y.reshape(len(y))
