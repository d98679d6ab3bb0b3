"""The built-in demo: an MLP on scikit-learn's digits, its seed ensemble, reverse-mode unrolled
differentiation for the margins of test digits, and the distributional report (PAPER §9
``digits-mlp``: 64-128-128-10, SGD with momentum; 10 epochs instead of 20) from 64 seeds, which run in
about a minute on 2 cores (`dtda demo`: 62–66 s, up to 109 s while the shared host was slow;
docs/unrolling.md); ``quick`` in a few seconds.
"""

from __future__ import annotations


def config(quick: bool = False) -> dict:
    """The demo's configuration as a ``{section: {key: value}}`` dict (validated like any other)."""
    return {
        "data": {"source": "sklearn:digits", "split_seed": 0, "max_train": 300 if quick else 0},
        "model": {"name": "mlp:32" if quick else "mlp:128,128", "activation": "relu"},
        "train": {"seeds": 4 if quick else 64, "optimizer": "sgd", "lr": 0.03, "momentum": 0.9,
                  "weight_decay": 1e-3, "batch_size": 64, "epochs": 2 if quick else 10},
        "attribute": {"method": "unroll", "mode": "reverse"},
        "measure": {"kind": "margin", "test": 20},
        "statistics": {"bootstrap": 100 if quick else 1000, "ci": ["mean", "var_increase", "w2"]},
        "report": {"top": 10, "remove": 10, "measurements": 2 if quick else 4},
        # Two worker processes with one torch thread each use two cores better than one process.
        "execution": {"executor": "local"} if quick else {"executor": "process", "workers": 2},
    }
