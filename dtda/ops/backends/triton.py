"""The ``triton`` backend: launchers for the Triton kernels of ``dtda.kernels``.

Runs on CUDA tensors when triton imports and a GPU is present. Under ``TRITON_INTERPRET=1``
(set before anything imports triton) it also runs on CPU tensors, but only when forced: the
interpreter is for tests, never for automatic selection.
"""

from __future__ import annotations

import contextlib
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


# ---- launchers: signatures as in dtda/ops/reference.py; kernel modules import on first use --------

def _on(device: torch.device) -> contextlib.AbstractContextManager:
    """Launch on ``device`` (Triton launches on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@register("kron_covariance", "triton")
def kron_covariance(x, mask):
    from dtda.kernels import kron
    with _on(x.device):
        return kron.kron_covariance(x, mask)


@register("ghost_dot", "triton")
def ghost_dot(a, g, M):
    from dtda.kernels import ghost
    with _on(a.device):
        return ghost.ghost_dot(a, g, M)


@register("ghost_pairwise", "triton")
def ghost_pairwise(a_q, g_q, a, g):
    from dtda.kernels import ghost
    with _on(a.device):
        return ghost.ghost_pairwise(a_q, g_q, a, g)


@register("ekfac_eigvals", "triton")
def ekfac_eigvals(a, g, QA, QS):
    from dtda.kernels import ekfac
    with _on(a.device):
        return ekfac.ekfac_eigvals(a, g, QA, QS)


@register("kron_apply", "triton")
def kron_apply(V, QA, QS, scale):
    from dtda.kernels import kron
    with _on(V.device):
        return kron.kron_apply(V, QA, QS, scale)


@register("jl_project", "triton")
def jl_project(x, k, seed, kind):
    from dtda.kernels import jl
    with _on(x.device):
        return jl.jl_project(x, k, seed, kind)


def _seed_moments_fits(m, delta) -> str:
    from dtda.kernels.moments import K_MAX
    return "" if m.shape[0] <= K_MAX else f"it holds at most {K_MAX} seeds in registers, got K = {m.shape[0]}"


@register("seed_moments", "triton", accepts=_seed_moments_fits)
def seed_moments(m, delta):
    from dtda.kernels import moments
    with _on(delta.device):
        return moments.seed_moments(m, delta)
