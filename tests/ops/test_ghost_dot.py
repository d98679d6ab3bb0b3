"""ghost_dot: S[n, q] = Σ_t g_ntᵀ M_q a_nt, every implementation against the float64 reference."""

import pytest
import torch
from harness import (OPCHECK_QUICK, assert_close_to_reference, check_all_dtypes, half_implementations, implementations,
                     native_dtype_rejected, noncontiguous, run)

import dtda.ops
from dtda.ops.backends import torch_fast

OP = "ghost_dot"

# (N, T, I, O, Q). The cost model picks "project" when T·Q ≲ T + Q (T = 1 or Q = 1), else "form".
SHAPES = [
    (7, 3, 5, 11, 2),     # primes, I ≠ O, form
    (1, 1, 1, 1, 1),      # all size 1
    (5, 1, 4, 3, 3),      # T = 1: project
    (4, 6, 3, 2, 1),      # Q = 1, T > 1: project, tokens summed
    (6, 5, 8, 7, 4),      # form
    (0, 3, 4, 5, 2),      # N = 0
    (4, 3, 4, 5, 0),      # Q = 0
]
# Large enough for the C++ tiles to split: tokens, then M's rows chunked (project), output rows
# chunked (form).
TILED = [(2, 1100, 3, 1000, 1), (300, 1, 5, 700, 8), (4, 3, 1000, 1100, 2)]


def inputs(N, T, I, O, Q):
    return torch.randn(N, T, I), torch.randn(N, T, O), torch.randn(Q, O, I)


@pytest.mark.parametrize("backend", implementations(OP))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, shape):
    check_all_dtypes(OP, backend, shape, inputs(*shape))


@pytest.mark.parametrize("backend", implementations(OP))
def test_two_dimensional_and_noncontiguous(backend):
    a, g, M = inputs(5, 1, 6, 7, 3)
    assert_close_to_reference(OP, backend, (a[:, 0], g[:, 0], M), torch.float32)
    a, g, M = inputs(3, 4, 5, 6, 2)
    assert_close_to_reference(OP, backend, tuple(noncontiguous(t) for t in (a, g, M)), torch.float32)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("shape", TILED, ids=str)
def test_tiled(backend, shape):
    if backend not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip(f"{backend} unavailable")
    assert_close_to_reference(OP, backend, inputs(*shape), torch.float64)


@pytest.mark.parametrize("shape", [(9, 1, 4, 3, 3), (9, 5, 4, 3, 3)], ids=str)
def test_torch_chunks(monkeypatch, shape):
    monkeypatch.setattr(torch_fast, "_LINEAR_CHUNK_BYTES", 200)
    assert_close_to_reference(OP, "torch", inputs(*shape), torch.float64)


@pytest.mark.parametrize("backend", half_implementations(OP))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_gives_float32(backend, dtype):
    assert_close_to_reference(OP, backend, inputs(5, 3, 4, 6, 2), dtype)


def test_cpp_deterministic():
    if "cpp" not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip("cpp unavailable")
    args = inputs(33, 4, 17, 9, 5)
    assert torch.equal(run(OP, "cpp", *args), run(OP, "cpp", *args))


def test_opcheck():
    a, g, M = inputs(3, 2, 4, 5, 2)
    torch.library.opcheck(torch.ops.dtda.ghost_dot.default, (a[:, :1], g[:, :1], M), test_utils=OPCHECK_QUICK)
    torch.library.opcheck(torch.ops.dtda.ghost_dot.default,
                          (a.requires_grad_(), g.requires_grad_(), M.requires_grad_()))


def test_gradcheck():
    a, g, M = (t.double().requires_grad_() for t in inputs(3, 2, 4, 5, 2))
    assert torch.autograd.gradcheck(dtda.ops.ghost_dot, (a, g, M))


def test_mismatched_inputs_raise():
    a, g, M = inputs(4, 3, 5, 6, 2)
    with pytest.raises(ValueError, match=r"ghost_dot: g has shape \[4, 2, 6\], expected \[4, 3, \?\]"):
        dtda.ops.ghost_dot(a, g[:, :2], M)
    with pytest.raises(ValueError, match=r"ghost_dot: M has shape \[2, 6, 4\], expected \[\?, 6, 5\]"):
        dtda.ops.ghost_dot(a, g, M[..., :4])
    with pytest.raises(ValueError, match=r"ghost_dot: M must be 3-D, got shape \[6, 5\]"):
        dtda.ops.ghost_dot(a, g, M[0])
    with pytest.raises(ValueError, match="ghost_dot: g has dtype torch.float64 but a has torch.float32"):
        dtda.ops.ghost_dot(a, g.double(), M)


def test_native_rejects_other_dtypes():
    native_dtype_rejected("ghost_dot", 11)
