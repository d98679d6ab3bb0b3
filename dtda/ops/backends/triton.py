"""The ``triton`` backend: launchers for the Triton kernels of ``dtda.kernels``.

Runs on CUDA tensors when triton imports and a GPU is present. Under ``TRITON_INTERPRET=1``
(set before anything imports triton) it also runs on CPU tensors, but only when forced: the
interpreter is for tests, never for automatic selection.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os

import torch

from dtda.ops.registry import Backend, add_backend, register

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.cache
def _unavailable() -> str:
    # cached: the dispatcher asks on every op call, and find_spec walks sys.path (≈ 0.2 ms)
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


# ---- launchers: signatures as in dtda/ops/reference.py; kernel modules import on first use --------

def _on(device: torch.device) -> contextlib.AbstractContextManager:
    """Launch on ``device`` (Triton launches on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _seed_moments_fits(m, delta) -> str:
    from dtda.kernels.moments import K_MAX
    return "" if m.shape[0] <= K_MAX else f"it holds at most {K_MAX} seeds in registers, got K = {m.shape[0]}"


# op -> (module of dtda.kernels holding its launcher, argument limit or None)
_LAUNCHERS = {
    "kron_covariance": ("kron", None),
    "ghost_dot": ("ghost", None),
    "ghost_pairwise": ("ghost", None),
    "ekfac_eigvals": ("ekfac", None),
    "kron_apply": ("kron", None),
    "jl_project": ("jl", None),
    "seed_moments": ("moments", _seed_moments_fits),
}


def _launcher(op: str, module: str):
    def launch(*args):
        kernels = importlib.import_module(f"dtda.kernels.{module}")
        device = next(a for a in args if isinstance(a, torch.Tensor)).device
        with _on(device):
            return getattr(kernels, op)(*args)
    launch.__name__ = op
    return launch


for _op, (_module, _accepts) in _LAUNCHERS.items():
    register(_op, "triton", accepts=_accepts)(_launcher(_op, _module))
