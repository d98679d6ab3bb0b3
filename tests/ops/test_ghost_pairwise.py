"""ghost_pairwise: S[q, n] = ⟨G_q, G_n⟩ from factors on both sides, against the float64 reference."""

import pytest
import torch
from harness import (OPCHECK_QUICK, assert_close_to_reference, check_all_dtypes, half_implementations, implementations,
                     native_dtype_rejected, noncontiguous, run)

import dtda.ops
from dtda.ops.backends import torch_fast

OP = "ghost_pairwise"

# (Q, S, N, T, I, O). The cost model picks token Gram products when S·T is small against I·O,
# else forms G_q and runs ghost_dot against it ("form" or, with Q = 1, "project").
SHAPES = [
    (2, 3, 7, 3, 5, 11),    # primes, I ≠ O, gram
    (1, 1, 1, 1, 1, 1),     # all size 1
    (3, 1, 5, 1, 4, 6),     # S = T = 1
    (2, 7, 5, 6, 3, 4),     # many tokens: G_q formed, ghost_dot by forming G_n
    (1, 7, 5, 6, 3, 4),     # Q = 1: G_q formed, ghost_dot by projection
    (2, 3, 0, 2, 4, 5),     # N = 0
    (0, 3, 4, 2, 4, 5),     # Q = 0
]


def inputs(Q, S, N, T, I, O):
    return torch.randn(Q, S, I), torch.randn(Q, S, O), torch.randn(N, T, I), torch.randn(N, T, O)


@pytest.mark.parametrize("backend", implementations(OP))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, shape):
    check_all_dtypes(OP, backend, shape, inputs(*shape))


@pytest.mark.parametrize("backend", implementations(OP))
def test_two_dimensional_and_noncontiguous(backend):
    a_q, g_q, a, g = inputs(3, 1, 5, 1, 6, 7)
    assert_close_to_reference(OP, backend, (a_q[:, 0], g_q[:, 0], a[:, 0], g[:, 0]), torch.float32)
    args = tuple(noncontiguous(t) for t in inputs(2, 3, 4, 2, 5, 6))
    assert_close_to_reference(OP, backend, args, torch.float32)


@pytest.mark.parametrize("shape", [(3, 2, 9, 2, 4, 3), (2, 7, 9, 6, 3, 4)], ids=str)
def test_torch_chunks(monkeypatch, shape):
    monkeypatch.setattr(torch_fast, "_LINEAR_CHUNK_BYTES", 200)
    assert_close_to_reference(OP, "torch", inputs(*shape), torch.float64)


@pytest.mark.parametrize("backend", half_implementations(OP))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_gives_float32(backend, dtype):
    assert_close_to_reference(OP, backend, inputs(2, 3, 5, 2, 4, 6), dtype)


def test_cpp_deterministic():
    if "cpp" not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip("cpp unavailable")
    args = inputs(3, 4, 40, 5, 17, 9)
    assert torch.equal(run(OP, "cpp", *args), run(OP, "cpp", *args))


def test_opcheck():
    args = inputs(2, 3, 4, 2, 5, 3)
    torch.library.opcheck(torch.ops.dtda.ghost_pairwise.default, inputs(1, 1, 3, 1, 2, 4),
                          test_utils=OPCHECK_QUICK)
    torch.library.opcheck(torch.ops.dtda.ghost_pairwise.default, tuple(t.requires_grad_() for t in args))


def test_mismatched_inputs_raise():
    a_q, g_q, a, g = inputs(2, 3, 4, 5, 6, 7)
    with pytest.raises(ValueError, match=r"ghost_pairwise: g has shape \[4, 4, 7\], expected \[4, 5, \?\]"):
        dtda.ops.ghost_pairwise(a_q, g_q, a, g[:, :4])
    with pytest.raises(ValueError, match=r"a_q has shape \[2, 3, 5\], expected \[\?, \?, 6\]"):
        dtda.ops.ghost_pairwise(a_q[..., :5], g_q, a, g)
    with pytest.raises(ValueError, match=r"ghost_pairwise: g_q has shape \[2, 2, 7\], expected \[2, 3, 7\]"):
        dtda.ops.ghost_pairwise(a_q, g_q[:, :2], a, g)
    with pytest.raises(ValueError, match=r"ghost_pairwise: g_q has shape \[2, 3, 6\], expected \[2, 3, 7\]"):
        dtda.ops.ghost_pairwise(a_q, g_q[..., :6], a, g)


def test_native_rejects_other_dtypes():
    native_dtype_rejected("ghost_pairwise", 13)
