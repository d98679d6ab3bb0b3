"""The ``triton`` backend: launchers for the Triton kernels of ``dtda.kernels``.

Runs on CUDA tensors when triton imports and a GPU is present. Under ``TRITON_INTERPRET=1``
(set before anything imports triton) it also runs on CPU tensors, but only when forced: the
interpreter is for tests, never for automatic selection.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from dtda.ops.registry import Backend, add_backend, register

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _unavailable() -> str:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'dtda[gpu]')"
    if not INTERPRET and not torch.cuda.is_available():
        return "no CUDA device (set TRITON_INTERPRET=1 before import to run the interpreter on CPU)"
    return ""


BACKEND = add_backend(Backend(
    name="triton", priority=30,
    devices=frozenset({"cuda", "cpu"} if INTERPRET else {"cuda"}),
    dtypes=frozenset({torch.float32, torch.float16, torch.bfloat16}),
    unavailable=_unavailable, auto=not INTERPRET))
