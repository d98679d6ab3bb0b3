"""ekfac_eigvals: Λ = Σ_n (QSᵀ G_n QA)^∘2, every implementation against the float64 reference."""

import pytest
import torch
from harness import (OPCHECK_QUICK, assert_close_to_reference, check_all_dtypes, half_implementations, implementations,
                     native_dtype_rejected, noncontiguous, run)

import dtda.ops
from dtda.ops.backends import torch_fast

OP = "ekfac_eigvals"

# (N, T, I, O). T = 1 uses the rank-one identity; T > 1 rotates tokens first, or forms G_n first
# when T exceeds about O·I(O+I)/(O²+I²).
SHAPES = [
    (7, 3, 5, 11),    # primes, I ≠ O, rotate first
    (1, 1, 1, 1),     # all size 1
    (9, 1, 4, 6),     # T = 1: rank one
    (5, 9, 3, 4),     # T > I, O: G_n formed first
    (3, 2, 8, 7),     # rotate first
    (0, 3, 4, 5),     # N = 0: zeros
]


def orthogonal(n):
    return torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))[0].float()


def inputs(N, T, I, O):
    return torch.randn(N, T, I), torch.randn(N, T, O), orthogonal(I), orthogonal(O)


@pytest.mark.parametrize("backend", implementations(OP))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, shape):
    check_all_dtypes(OP, backend, shape, inputs(*shape))


@pytest.mark.parametrize("backend", implementations(OP))
def test_two_dimensional_and_noncontiguous(backend):
    a, g, QA, QS = inputs(6, 1, 5, 7)
    assert_close_to_reference(OP, backend, (a[:, 0], g[:, 0], QA, QS), torch.float32)
    args = tuple(noncontiguous(t) for t in inputs(4, 3, 5, 6))
    assert_close_to_reference(OP, backend, args, torch.float32)


def rank_one(a, g, QA, QS):
    """The T = 1 identity Λ = ((g QS)^∘2)ᵀ (a QA)^∘2: an oracle that is cheap for large N."""
    return (g[:, 0] @ QS).square().T @ (a[:, 0] @ QA).square()


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_many_examples(backend):
    # Several row blocks (T = 1) and per-thread partial sums (T > 1) in the C++ kernel.
    if backend not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip(f"{backend} unavailable")
    assert_close_to_reference(OP, backend, inputs(1600, 1, 200, 300), torch.float64, ref_fn=rank_one)
    assert_close_to_reference(OP, backend, inputs(400, 4, 64, 64), torch.float64)


@pytest.mark.parametrize("shape", [(9, 1, 4, 3), (9, 3, 4, 3), (9, 9, 3, 4)], ids=str)
def test_torch_chunks(monkeypatch, shape):
    monkeypatch.setattr(torch_fast, "_LINEAR_CHUNK_BYTES", 200)
    assert_close_to_reference(OP, "torch", inputs(*shape), torch.float64)


@pytest.mark.parametrize("backend", half_implementations(OP))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_gives_float32(backend, dtype):
    assert_close_to_reference(OP, backend, inputs(5, 3, 4, 6), dtype)


@pytest.mark.parametrize("backend", implementations(OP))
def test_out_accumulates(backend):
    a, g, QA, QS = inputs(5, 2, 4, 3)
    with dtda.ops.use_backend("reference"):
        expected = 1.0 + dtda.ops.ekfac_eigvals(a.double(), g.double(), QA.double(), QS.double())
    out = torch.ones(3, 4)
    assert run(OP, backend, a, g, QA, QS, out=out) is out
    torch.testing.assert_close(out, expected.float(), rtol=1e-5, atol=1e-5)


def test_cpp_deterministic():
    if "cpp" not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip("cpp unavailable")
    args = inputs(64, 5, 33, 20)
    assert torch.equal(run(OP, "cpp", *args), run(OP, "cpp", *args))


def test_opcheck():
    args = inputs(3, 2, 4, 5)
    torch.library.opcheck(torch.ops.dtda.ekfac_eigvals.default, inputs(3, 1, 4, 5), test_utils=OPCHECK_QUICK)
    torch.library.opcheck(torch.ops.dtda.ekfac_eigvals.default, tuple(t.requires_grad_() for t in args))


def test_mismatched_inputs_raise():
    a, g, QA, QS = inputs(4, 3, 5, 6)
    with pytest.raises(ValueError, match=r"ekfac_eigvals: g has shape \[3, 3, 6\], expected \[4, 3, \?\]"):
        dtda.ops.ekfac_eigvals(a, g[:3], QA, QS)
    with pytest.raises(ValueError, match=r"ekfac_eigvals: QA has shape \[6, 6\], expected \[5, 5\]"):
        dtda.ops.ekfac_eigvals(a, g, QS, QS)
    with pytest.raises(ValueError, match=r"ekfac_eigvals: QS has shape \[5, 5\], expected \[6, 6\]"):
        dtda.ops.ekfac_eigvals(a, g, QA, QA)
    with pytest.raises(ValueError, match=r"ekfac_eigvals: out has shape \[5, 6\], expected \[6, 5\]"):
        dtda.ops.ekfac_eigvals(a, g, QA, QS, out=torch.zeros(5, 6))


def test_native_rejects_other_dtypes():
    native_dtype_rejected("ekfac_eigvals", 11)
