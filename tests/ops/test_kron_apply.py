"""kron_apply: out_q = QS (scale ∘ (QSᵀ V_q QA)) QAᵀ, every implementation against the reference."""

import pytest
import torch
from harness import (OPCHECK_QUICK, assert_close_to_reference, check_all_dtypes, half_implementations, implementations,
                     native_dtype_rejected, noncontiguous, run)

import dtda.ops
from dtda.ops.backends import torch_fast

OP = "kron_apply"

SHAPES = [  # (Q, O, I)
    (2, 11, 5),   # primes, I ≠ O
    (1, 1, 1),    # all size 1
    (1, 6, 7),    # Q = 1 (one query on a threaded BLAS in C++)
    (5, 4, 3),    # Q > threads (queries split over threads in C++)
    (0, 3, 4),    # Q = 0
]


def orthogonal(n):
    return torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))[0].float()


def inputs(Q, O, I):
    return torch.randn(Q, O, I), orthogonal(I), orthogonal(O), torch.rand(O, I) + 0.1


@pytest.mark.parametrize("backend", implementations(OP))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, shape):
    check_all_dtypes(OP, backend, shape, inputs(*shape))


@pytest.mark.parametrize("backend", implementations(OP))
def test_two_dimensional_noncontiguous_and_general_matrices(backend):
    V, QA, QS, scale = inputs(1, 6, 5)
    assert_close_to_reference(OP, backend, (V[0], QA, QS, scale), torch.float32)
    args = tuple(noncontiguous(t) for t in inputs(3, 5, 6))
    assert_close_to_reference(OP, backend, args, torch.float32)
    # Any square matrices, not only orthogonal ones; negative scales.
    assert_close_to_reference(OP, backend, (torch.randn(2, 4, 3), torch.randn(3, 3), torch.randn(4, 4),
                                            torch.randn(4, 3)), torch.float32)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_larger(backend):
    if backend not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip(f"{backend} unavailable")
    assert_close_to_reference(OP, backend, inputs(4, 101, 103), torch.float32)


def test_torch_chunks(monkeypatch):
    monkeypatch.setattr(torch_fast, "_LINEAR_CHUNK_BYTES", 200)
    assert_close_to_reference(OP, "torch", inputs(5, 4, 3), torch.float64)


@pytest.mark.parametrize("backend", half_implementations(OP))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_gives_float32(backend, dtype):
    assert_close_to_reference(OP, backend, inputs(3, 5, 4), dtype)


def test_cpp_deterministic():
    if "cpp" not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip("cpp unavailable")
    args = inputs(9, 40, 33)
    assert torch.equal(run(OP, "cpp", *args), run(OP, "cpp", *args))


def test_opcheck():
    args = inputs(2, 4, 3)
    torch.library.opcheck(torch.ops.dtda.kron_apply.default, inputs(1, 3, 2), test_utils=OPCHECK_QUICK)
    torch.library.opcheck(torch.ops.dtda.kron_apply.default, tuple(t.requires_grad_() for t in args))


def test_gradcheck():
    V, QA, QS, scale = (t.double() for t in inputs(2, 4, 3))
    V.requires_grad_()
    scale.requires_grad_()
    assert torch.autograd.gradcheck(dtda.ops.kron_apply, (V, QA, QS, scale))


def test_mismatched_inputs_raise():
    V, QA, QS, scale = inputs(2, 4, 3)
    with pytest.raises(ValueError, match=r"kron_apply: QA has shape \[4, 4\], expected \[3, 3\]"):
        dtda.ops.kron_apply(V, QS, QS, scale)
    with pytest.raises(ValueError, match=r"kron_apply: QS has shape \[3, 3\], expected \[4, 4\]"):
        dtda.ops.kron_apply(V, QA, QA, scale)
    with pytest.raises(ValueError, match=r"kron_apply: scale has shape \[3, 4\], expected \[4, 3\]"):
        dtda.ops.kron_apply(V, QA, QS, scale.T)
    with pytest.raises(ValueError, match=r"kron_apply: V must be 2-D or 3-D, got shape \[1, 2, 4, 3\]"):
        dtda.ops.kron_apply(V[None], QA, QS, scale)


def test_native_rejects_other_dtypes():
    native_dtype_rejected("kron_apply", 10)
