"""Run configuration: a declared schema, validation that reports every problem at once, TOML I/O.

A configuration is a TOML file with the sections below (``docs/cli.md`` lists every key with its
default). :func:`load` reads and validates it before any work: unknown sections and keys, wrong
types, bad values and missing files are collected and raised together as :class:`ConfigError`,
each naming the key, what was found and what is allowed. The *resolved* configuration (every
default filled in, paths made absolute) is what a run directory stores, and its
:func:`fingerprint` binds the directory to it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BUILTIN_DATA = ("sklearn:digits", "sklearn:diabetes", "sklearn:breast_cancer", "sklearn:wine", "sklearn:iris",
                "toy:regression1d")
# Sections whose values change the numbers; ``execution`` and ``report`` do not enter the fingerprint.
RESULT_SECTIONS = ("data", "model", "train", "attribute", "measure", "statistics")


class ConfigError(ValueError):
    """One or more configuration problems; ``problems`` lists them, one line each."""

    def __init__(self, problems: list[str], source: str = "config"):
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Key:
    """One configuration key: accepted types, default, an optional check and help text.

    ``check(value)`` returns None when the value is fine, else a phrase saying what is allowed.
    """

    types: tuple[type, ...]
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None


def _choice(*allowed: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else "one of " + ", ".join(repr(a) for a in allowed)


def _positive(v) -> str | None:
    return None if v > 0 and math.isfinite(v) else "a finite number > 0"


def _nonneg(v) -> str | None:
    return None if v >= 0 and math.isfinite(v) else "a finite number >= 0"


def _fraction(v) -> str | None:
    return None if 0 < v < 1 else "a number strictly between 0 and 1"


def _unit(v) -> str | None:
    return None if 0 <= v < 1 else "a number in [0, 1)"


def _seeds(v) -> str | None:
    if isinstance(v, int):
        return None if v >= 2 else "an integer >= 2 (the number of seeds 0..K-1) or a list of >= 2 distinct integers"
    if len(v) < 2 or len(set(v)) != len(v) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v):
        return "a list of >= 2 distinct non-negative integers"
    return None


def _test(v) -> str | None:
    if isinstance(v, int):
        return None if v >= 1 else "an integer >= 1 (the first n test examples) or a list of test indices"
    if not v or len(set(v)) != len(v) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v):
        return "a non-empty list of distinct non-negative test indices"
    return None


def _ci(v) -> str | None:
    from dtda.stats import STATISTICS

    def known(name) -> bool:
        if name in STATISTICS or name == "quantiles":
            return True
        try:  # quantile_<p>, as dtda.stats names one quantile level
            return name.startswith("quantile_") and 0 < float(name.removeprefix("quantile_")) < 1
        except ValueError:
            return False

    bad = [x for x in v if not known(x)]
    return None if not bad else f"a list of statistic names from {', '.join(STATISTICS)}, 'quantiles' or 'quantile_<p>'"


def _method(v) -> str | None:
    from dtda.attribute import method_options

    names = method_options()
    return None if v in names else "one of " + ", ".join(repr(n) for n in names)


def _methods(v) -> str | None:
    bad = [m for m in v if not isinstance(m, str) or _method(m) is not None]
    if bad or len(set(v)) != len(v):
        return "a list of distinct method names, each " + _method("")
    return None


def _damping(v) -> str | None:
    if isinstance(v, str):
        return None if v in ("training-time", "heuristic") else "'training-time', 'heuristic' or a number >= 0"
    return _nonneg(v)


def _names(v) -> str | None:
    return None if all(isinstance(n, str) and n for n in v) else "a list of module names (strings)"


def _model(v) -> str | None:
    if v in ("auto", "linear", "data") or _is_module_function(v):
        return None
    if v.startswith("mlp:"):
        try:
            widths = [int(w) for w in v[4:].split(",")]
        except ValueError:
            widths = []
        if widths and all(w > 0 for w in widths):
            return None
    return ("'auto', 'linear', 'mlp:W1,W2,...' with positive widths (e.g. 'mlp:64,64'), 'module:function', "
            "or 'data' (the factory returned by module:function data)")


def _is_module_function(v: str) -> bool:
    mod, sep, fn = v.partition(":")
    return bool(sep) and mod.replace(".", "").replace("_", "").isalnum() and fn.isidentifier() \
        and not v.startswith(("sklearn:", "toy:", "csv:", "npz:", "mlp:"))


_I, _F, _S, _B, _L = (int,), (int, float), (str,), (bool,), (list,)

SCHEMA: dict[str, dict[str, Key]] = {
    "data": {
        "source": Key(_S, None, "sklearn:digits|diabetes|breast_cancer|wine|iris, toy:regression1d, csv:PATH, "
                                "npz:PATH, or module:function returning (model_factory, train, test)"),
        "target": Key(_S, "y", "CSV column / NPZ array holding the target"),
        "features": Key(_S, "X", "NPZ array holding the features (CSV: every column but the target)"),
        "task": Key(_S, "auto", "what the target is; auto: integer targets are classes",
                    _choice("auto", "classification", "regression")),
        "test_fraction": Key(_F, 0.2, "share of the examples held out as the test set", _fraction),
        "split_seed": Key(_I, 0, "seed of the train/test split (and of generated toy data)"),
        "standardize": Key(_B, True, "standardise features (and regression targets) with training statistics"),
        "max_train": Key(_I, 0, "keep only the first n training examples (0: all)", _nonneg),
    },
    "model": {
        "name": Key(_S, "auto", "mlp:W1,W2,..., linear, module:function (a zero-argument model factory), "
                                "data (the factory module:function data returns), or auto (data if there "
                                "is one, else mlp:64,64)", _model),
        "activation": Key(_S, "relu", "hidden activation of mlp models", _choice("relu", "tanh", "gelu")),
    },
    "train": {
        "seeds": Key((int, list), 16, "number of seeds (0..K-1) or a list of seeds", _seeds),
        "optimizer": Key(_S, "sgd", "optimiser", _choice("sgd", "adamw")),
        "lr": Key(_F, 0.03, "learning rate", _positive),
        "momentum": Key(_F, 0.9, "heavy-ball momentum (sgd)", _unit),
        "nesterov": Key(_B, False, "Nesterov momentum (sgd)"),
        "weight_decay": Key(_F, 0.0, "weight decay (sgd: L2 term in the loss; adamw: decoupled)", _nonneg),
        "batch_size": Key(_I, 64, "examples per step", _positive),
        "epochs": Key(_I, 10, "epochs of training (ignored when steps > 0)", _positive),
        "steps": Key(_I, 0, "steps of training (0: use epochs)", _nonneg),
        "schedule": Key(_S, "constant", "learning-rate schedule", _choice("constant", "cosine", "linear")),
        "batching": Key(_S, "epoch", "epoch: shuffle each epoch; iid: sample batches with replacement",
                        _choice("epoch", "iid")),
        "loss": Key(_S, "auto", "per-example loss; auto: cross_entropy for classes, mse for regression",
                    _choice("auto", "cross_entropy", "mse")),
        "dtype": Key(_S, "float32", "training dtype", _choice("float32", "float64")),
        "checkpoint_every": Key(_I, 0, "steps between checkpoints (0: about sqrt(steps))", _nonneg),
        "threads": Key(_I, 1, "torch threads of each seed task on every executor (sums split over threads "
                              "round differently, so the thread count is part of the result)", _positive),
    },
    "attribute": {
        "method": Key(_S, "unroll", "attribution method: unroll (exact unrolled differentiation) or an influence "
                                    "function per seed (identity, diagonal, kfac, ekfac, exact, cg, lissa, astra, "
                                    "source; docs/influence.md)", _method),
        "compare": Key(_L, [], "more methods computed on the same seeds; the report shows how each agrees with "
                               "`method`", _methods),
        "mode": Key(_S, "reverse", "unroll: reverse mode, every training example's effect, one adjoint sweep per "
                                   "measurement", _choice("reverse")),
        "damping": Key((str, int, float), "training-time", "influence: 'training-time' ((1 - momentum) / sum of "
                                                           "learning rates), 'heuristic' (0.1 x mean eigenvalue) "
                                                           "or a number >= 0", _damping),
        "fisher": Key(_S, "true", "influence: curvature from labels sampled from the model (true) or the "
                                  "training labels (empirical)", _choice("true", "empirical")),
        "modules": Key(_L, [], "influence: names of the modules to cover (empty: every module with parameters)",
                       _names),
        "options": Key((dict,), {}, "influence: solver options of the chosen methods, e.g. {max_iter = 100} "
                                    "(docs/influence.md lists them)"),
    },
    "measure": {
        "kind": Key(_S, "auto", "measurement; auto: margin for classes, output for regression",
                    _choice("auto", "margin", "loss", "output")),
        "test": Key((int, list), 20, "the first n test examples, or a list of test indices", _test),
    },
    "statistics": {
        "bootstrap": Key(_I, 500, "bootstrap resamples of seeds for confidence intervals (0: none)", _nonneg),
        "ci": Key(_L, ["mean", "var_increase", "w2"], "statistics that get bootstrap intervals (each costs time)",
                  _ci),
        "seed": Key(_I, 0, "seed of the bootstrap resampling"),
    },
    "report": {
        "top": Key(_I, 10, "examples listed per criterion", _positive),
        "remove": Key(_I, 10, "top examples removed for the predicted 'after' distributions", _positive),
        "measurements": Key(_I, 4, "measurements shown with their own plots", _positive),
    },
    "execution": {
        "executor": Key(_S, "local", "where seeds run", _choice("local", "process", "ray")),
        "workers": Key(_I, 2, "parallel workers (process) or concurrent tasks (ray)", _positive),
        "retries": Key(_I, 2, "retries of a failed or killed group task", _nonneg),
        "seeds_per_group": Key(_I, 0, "seeds trained and unrolled in lockstep as one task (0: chosen from the model's "
                                      "size, the seeds, the workers and the memory when the run is created; "
                                      "stored, and part of the run's fingerprint, since a member's bits depend "
                                      "on its group's size; see `dtda info`)", _nonneg),
        "address": Key(_S, "", "ray: cluster address ('auto', 'ray://host:10001'); empty starts a local cluster"),
        "num_cpus": Key(_F, 1, "ray: CPUs per seed task", _positive),
        "num_gpus": Key(_F, 0, "ray: GPUs per seed task (0: CPU)", _nonneg),
        "on_failure": Key(_S, "continue", "a seed whose training fails (non-finite loss): continue with the "
                                          "rest and record it, or stop the run", _choice("continue", "stop")),
    },
}


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "integer", float: "number", str: "string", bool: "boolean", list: "list", dict: "table"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _found(v: Any) -> str:
    return f"{v!r} ({type(v).__name__})"


def validate(raw: dict, base_dir: Path | str = ".", source: str = "config") -> dict:
    """Check ``raw`` against :data:`SCHEMA` and return the resolved configuration.

    Collects every problem (unknown sections/keys, wrong types, bad values, missing files and
    unimportable ``module:function`` names) and raises them together as :class:`ConfigError`.
    Relative paths resolve against ``base_dir`` (the config file's folder).
    """
    problems: list[str] = []
    resolved: dict[str, dict] = {}
    for section in raw:
        if section not in SCHEMA:
            problems.append(f"[{section}]: unknown section; allowed sections: {', '.join(SCHEMA)}")
        elif not isinstance(raw[section], dict):
            problems.append(f"[{section}]: expected a table, found {_found(raw[section])}")
    for section, keys in SCHEMA.items():
        given = raw.get(section, {}) if isinstance(raw.get(section, {}), dict) else {}
        out = resolved[section] = {}
        for key in given:
            if key not in keys:
                problems.append(f"{section}.{key}: unknown key; allowed keys in [{section}]: {', '.join(keys)}")
        for key, spec in keys.items():
            name = f"{section}.{key}"
            if key not in given:
                if spec.default is None:
                    problems.append(f"{name}: missing; expected {spec.help}")
                out[key] = spec.default
                continue
            v = given[key]
            ok_type = isinstance(v, spec.types) and not (isinstance(v, bool) and bool not in spec.types)
            if not ok_type:
                problems.append(f"{name}: expected {_type_name(spec.types)} ({spec.help}), found {_found(v)}")
                out[key] = spec.default
                continue
            if float in spec.types and isinstance(v, int):
                v = float(v)
            if spec.check is not None and (why := spec.check(v)) is not None:
                problems.append(f"{name}: expected {why}, found {v!r}")
            out[key] = v
    if isinstance(resolved["data"]["source"], str):
        problems += _check_source(resolved["data"], Path(base_dir))
    problems += _check_methods(resolved["attribute"])
    if _is_module_function(resolved["model"]["name"]):
        if (why := _check_callable(resolved["model"]["name"])) is not None:
            problems.append(f"model.name: {why}")
    if resolved["execution"]["executor"] == "ray" and resolved["execution"]["address"] == "" \
            and importlib.util.find_spec("ray") is None:
        problems.append("execution.executor: 'ray' needs the ray package; install it with pip install 'dtda[ray]'")
    if problems:
        raise ConfigError(problems, source)
    return resolved


def _check_source(data: dict, base: Path) -> list[str]:
    src = data["source"]
    kind, _, rest = src.partition(":")
    if src in BUILTIN_DATA:
        return []
    if kind in ("sklearn", "toy"):
        return [f"data.source: unknown built-in data set {src!r}; built-ins: {', '.join(BUILTIN_DATA)}"]
    if kind in ("csv", "npz") or src.endswith((".csv", ".npz")):
        path = Path(rest if kind in ("csv", "npz") else src)
        path = path if path.is_absolute() else (base / path).resolve()
        prefix = kind if kind in ("csv", "npz") else path.suffix[1:]
        if not path.is_file():
            return [f"data.source: file not found: {path} (from {src!r})"]
        data["source"] = f"{prefix}:{path}"
        return []
    if _is_module_function(src):
        why = _check_callable(src)
        return [] if why is None else [f"data.source: {why}"]
    return [f"data.source: expected one of {', '.join(BUILTIN_DATA)}, csv:PATH, npz:PATH or module:function, "
            f"found {src!r}"]


def _check_methods(attribute: dict) -> list[str]:
    """The method is not also in ``compare``, and every solver option belongs to a chosen method."""
    from dtda.attribute import method_options

    known = method_options()
    chosen = [m for m in [attribute["method"], *attribute["compare"]] if isinstance(m, str) and m in known]
    problems = []
    if attribute["method"] in attribute["compare"]:
        problems.append(f"attribute.compare: lists the main method {attribute['method']!r} again")
    allowed = sorted({name for m in chosen for name in known[m]})
    unknown = sorted(set(attribute["options"]) - set(allowed))
    if unknown:
        problems.append(f"attribute.options: unknown option(s) {', '.join(map(repr, unknown))} for method(s) "
                        f"{', '.join(chosen)}; allowed: {', '.join(allowed) or 'none'}")
    return problems


def import_callable(spec: str):
    """The callable named by ``module:function``; the working directory is searched first, as
    ``python -m`` does, so a module next to the config is found by the ``dtda`` script too."""
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    mod, _, fn = spec.partition(":")
    f = getattr(importlib.import_module(mod), fn, None)
    if not callable(f):
        raise AttributeError(f"module {mod!r} has no callable {fn!r}")
    return f


def _check_callable(spec: str) -> str | None:
    try:
        import_callable(spec)
    except Exception as e:  # report the import failure as a config problem, with its cause
        return f"cannot import {spec!r}: {type(e).__name__}: {e}"
    return None


def load(path: str | Path, overrides: dict | None = None) -> dict:
    """Read, merge ``overrides`` ({section: {key: value}}) into, and validate a TOML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config file not found: {path}"], str(path))
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"not valid TOML: {e}"], str(path)) from None
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    return validate(raw, path.parent, str(path))


def fingerprint(resolved: dict) -> str:
    """sha256 over the result-relevant sections, the lockstep group size (members' bits depend on
    it) and the bytes of any data file they name."""
    h = hashlib.sha256()
    relevant = {**{s: resolved[s] for s in RESULT_SECTIONS},
                "seeds_per_group": resolved["execution"]["seeds_per_group"]}
    h.update(json.dumps(relevant, sort_keys=True).encode())
    for path in data_files(resolved):
        h.update(path.read_bytes())
    return h.hexdigest()


def data_files(resolved: dict) -> list[Path]:
    """The files a configuration reads its data from (``csv:``/``npz:`` sources)."""
    kind, _, rest = resolved["data"]["source"].partition(":")
    return [Path(rest)] if kind in ("csv", "npz") else []


def to_toml(resolved: dict) -> str:
    """Serialise a resolved configuration (tables of strings, numbers, booleans, lists) as TOML."""
    lines = ["# Resolved dtda configuration: every default filled in."]
    for section, values in resolved.items():
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"to_toml: cannot write {type(v).__name__} value {v!r}")


def seed_list(resolved: dict) -> list[int]:
    """The seeds of a resolved configuration: ``range(K)`` for an integer K, else the list."""
    s = resolved["train"]["seeds"]
    return list(range(s)) if isinstance(s, int) else list(s)
