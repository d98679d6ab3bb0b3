"""Triton-only checks beyond the per-op files: half inputs, block boundaries, both contraction
orders, 2-D and non-contiguous inputs, Rademacher bit identity, split reductions, selection.

Under TRITON_INTERPRET=1 (set by conftest) these run on CPU on tiny shapes; with
DTDA_TEST_GPU=1 on a CUDA machine they run on the GPU. fp16 and fp32 only: the interpreter's
bf16 tl.dot is wrong in triton 3.9.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from dtda.ops import alloc, reference, registry
from harness import assert_close_to_reference, noncontiguous

TRITON = registry.backends()["triton"]
DEVICE = "cuda" if os.environ.get("DTDA_TEST_GPU") and torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.triton,
              pytest.mark.skipif(bool(TRITON.unavailable() or TRITON.supports(torch.device(DEVICE), torch.float32)),
                                 reason=TRITON.unavailable() or "triton backend does not run on this device")]
DTYPES = [torch.float32, torch.float16]


def randn(*shape: int) -> torch.Tensor:
    """Normal samples between NaN guards: a read past the end makes the result NaN."""
    return alloc.guarded(torch.randn(*shape, device=DEVICE))


def orthogonal(n: int) -> torch.Tensor:
    return alloc.guarded(torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))[0].float().to(DEVICE))


def close_to_float64(got: torch.Tensor, ref64: torch.Tensor, rel: float = 1e-5) -> None:
    """Kernel-level checks of a forced variant: float32 error relative to the result's scale."""
    assert not got.isnan().any(), "unwritten (NaN-poisoned) elements"
    scale = max(1.0, ref64.abs().max().item())
    err = (got.double() - ref64).abs().max().item()
    assert err <= rel * scale, f"max error {err:.3e} > {rel * scale:.3e}"


def f64(*ts: torch.Tensor) -> list[torch.Tensor]:
    return [t.double() for t in ts]


# ---- every op, fp16 and fp32, shapes crossing the 16/32 block boundaries ----------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_kron_covariance(dtype, mask):
    x = randn(3, 6, 17)
    m = {None: None, "bool": torch.rand(3, 6, device=DEVICE) > 0.4,
         "float": torch.rand(3, 6, device=DEVICE)}[mask]
    m = m.to(dtype) if mask == "float" else m
    assert_close_to_reference("kron_covariance", "triton", (x, m), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kron_covariance_2d_noncontiguous(dtype):
    assert_close_to_reference("kron_covariance", "triton", (noncontiguous(randn(33, 17)),), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 3])
def test_ghost_dot(dtype, T):
    args = (randn(17, T, 33), randn(17, T, 18), randn(3, 18, 33))
    assert_close_to_reference("ghost_dot", "triton", args, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ghost_dot_2d_noncontiguous(dtype):
    args = (noncontiguous(randn(17, 9)), randn(17, 5), noncontiguous(randn(2, 5, 9)))
    assert_close_to_reference("ghost_dot", "triton", args, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S, T", [(1, 1), (2, 3)])
def test_ghost_pairwise(dtype, S, T):
    args = (randn(3, S, 17), randn(3, S, 9), randn(17, T, 17), randn(17, T, 9))
    assert_close_to_reference("ghost_pairwise", "triton", args, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 3])
def test_ekfac_eigvals(dtype, T):
    args = (randn(5, T, 17), randn(5, T, 33), orthogonal(17), orthogonal(33))
    assert_close_to_reference("ekfac_eigvals", "triton", args, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 17, 33), (9, 17)])
def test_kron_apply(dtype, shape):
    O, I = shape[-2:]
    args = (randn(*shape), orthogonal(I), orthogonal(O), torch.rand(O, I, device=DEVICE) + 0.5)
    assert_close_to_reference("kron_apply", "triton", args, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_jl_project(dtype, kind):
    x = noncontiguous(randn(5, 33))
    assert_close_to_reference("jl_project", "triton", (x, 130, 2**40 + 7, kind), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K", [2, 5, 17])
def test_seed_moments(dtype, K):
    m, delta = randn(K, 3), 0.3 * randn(K, 5, 3)
    assert_close_to_reference("seed_moments", "triton", (m, noncontiguous(delta)), dtype,
                              fields=reference.SeedMoments._fields)


# ---- forced contraction orders and split reductions -------------------------------------------

@pytest.mark.parametrize("order", ["tokens", "gram"])
@pytest.mark.parametrize("N, T, I, O, Q", [(5, 17, 9, 18, 3), (2, 3, 3, 2, 33), (70, 1, 3, 2, 2)])
def test_ghost_dot_orders(order, N, T, I, O, Q):
    from dtda.kernels import ghost
    a, g, M = randn(N, T, I), randn(N, T, O), randn(Q, O, I)
    with alloc.poisoned():
        got = ghost.ghost_dot(a, g, M, order=order)
    close_to_float64(got, reference.ghost_dot(*f64(a, g, M)))


@pytest.mark.parametrize("order", ["tokens", "gradients"])
@pytest.mark.parametrize("Q, S, N, T", [(2, 3, 5, 2), (70, 1, 70, 1)])
def test_ghost_pairwise_orders(order, Q, S, N, T):
    from dtda.kernels import ghost
    a_q, g_q, a, g = randn(Q, S, 9), randn(Q, S, 17), randn(N, T, 9), randn(N, T, 17)
    with alloc.poisoned():
        got = ghost.ghost_pairwise(a_q, g_q, a, g, order=order)
    close_to_float64(got, reference.ghost_pairwise(*f64(a_q, g_q, a, g)))


def test_contraction_order_choice():
    from dtda.kernels import ghost
    assert ghost.ghost_dot_order(T=1, Q=32) == "tokens"
    assert ghost.ghost_dot_order(T=128, Q=32) == "gram"
    assert ghost.ghost_pairwise_order(S=1, T=1, I=256, O=256) == "tokens"
    assert ghost.ghost_pairwise_order(S=128, T=128, I=256, O=256) == "gradients"


@pytest.mark.parametrize("split", [1, 3])
def test_bmm_split_reduction_and_prologue(split):
    from dtda.kernels.matmul import bmm
    a, b, s, w = randn(2, 17, 70), randn(2, 70, 33), randn(17, 33), torch.rand(70, device=DEVICE)
    with alloc.poisoned():
        got = bmm(a, b, scale=s, weight=w, split=split)
    a64, b64, s64, w64 = f64(a, b, s, w)
    close_to_float64(got, ((a64 * w64) @ b64) * s64)
    with alloc.poisoned():
        got = bmm(a, b, square=True, split=split)
    close_to_float64(got, a64.square() @ b64.square())


def test_ekfac_split_partials(monkeypatch):
    from dtda.kernels import ekfac, tiles
    monkeypatch.setattr(tiles, "split_count", lambda tiles_, steps, device: 3)
    a, g, QA, QS = randn(7, 2, 9), randn(7, 2, 17), orthogonal(9), orthogonal(17)
    with alloc.poisoned():
        got = ekfac.ekfac_eigvals(a, g, QA, QS)
    close_to_float64(got, reference.ekfac_eigvals(*f64(a, g, QA, QS)))


def test_empty_reductions_write_zeros():
    from dtda.kernels import ekfac, kron
    with alloc.poisoned():
        assert torch.equal(kron.kron_covariance(randn(0, 2, 5), None), torch.zeros(5, 5, device=DEVICE))
        assert torch.equal(ekfac.ekfac_eigvals(randn(0, 1, 3), randn(0, 1, 4), orthogonal(3), orthogonal(4)),
                           torch.zeros(4, 3, device=DEVICE))


# ---- randomness, limits, selection -------------------------------------------------------------

@pytest.mark.parametrize("P, k, seed", [(40, 200, 0), (33, 17, 2**40 + 12345), (5, 130, 2**32 - 1), (3, 5, 1)])
def test_rademacher_bit_identical(P, k, seed):
    from dtda.kernels import jl
    with alloc.poisoned():
        y = jl.jl_project(torch.eye(P, device=DEVICE), k, seed, "rademacher")
    R = reference.jl_matrix(P, k, seed, "rademacher", dtype=torch.float32, device=DEVICE)
    # Y = I·R/√k: every entry is ±fl(1/√k), with exactly the reference's signs
    assert torch.equal(torch.sign(y), R)
    assert torch.equal(y.abs(), torch.full_like(y, 1.0 / math.sqrt(k)))


def test_seed_moments_refuses_too_many_seeds():
    from dtda.kernels import moments
    K = moments.K_MAX + 1
    with pytest.raises(ValueError, match=f"K = {K}"):
        moments.seed_moments(randn(K, 1), randn(K, 1, 1))


@pytest.mark.skipif(DEVICE != "cpu" or bool(registry.forced()), reason="automatic selection on CPU")
def test_automatic_selection_never_picks_triton_on_cpu():
    for op in registry.OPS:
        for dtype in (torch.float32, torch.float16):
            name, _ = registry.select(op, torch.device("cpu"), dtype)
            assert name != "triton", f"{op} {dtype}: the interpreter was selected automatically"
