"""kron_covariance: C = Σ_{n,t} mask_nt x_nt x_ntᵀ, every implementation against the reference."""

import pytest
import torch
from harness import (OPCHECK_QUICK, assert_close_to_reference, dtypes_for, half_implementations, implementations,
                     native_dtype_rejected, noncontiguous, run, skip_unless_tiny)

import dtda.ops
from dtda.ops.backends import torch_fast

OP = "kron_covariance"

SHAPES = [  # (N, T, D)
    (7, 3, 5),    # primes
    (1, 1, 1),    # all size 1
    (6, 1, 8),    # T = 1
    (0, 3, 4),    # N = 0: zeros
]
MASKS = ["none", "bool", "weights"]


def make_mask(kind, N, T):
    if kind == "none":
        return None
    if kind == "bool":
        return torch.rand(N, T) > 0.4
    return torch.randn(N, T)  # negative weights too


@pytest.mark.parametrize("backend", implementations(OP))
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, mask, shape):
    skip_unless_tiny(backend, *shape)
    args = (torch.randn(*shape), make_mask(mask, *shape[:2]))
    for dtype in dtypes_for(backend):
        assert_close_to_reference(OP, backend, args, dtype)


@pytest.mark.parametrize("backend", implementations(OP))
def test_two_dimensional_and_noncontiguous(backend):
    x = torch.randn(6, 5)
    assert_close_to_reference(OP, backend, (x, None), torch.float32)
    assert_close_to_reference(OP, backend, (x, torch.rand(6) > 0.5), torch.float32)  # [N] mask
    x, w = torch.randn(4, 3, 6), torch.randn(3, 4).T
    assert_close_to_reference(OP, backend, (noncontiguous(x), w), torch.float32)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("mask", MASKS)
def test_many_rows(backend, mask):
    # More rows than one gathered block of the C++ kernel (several syrk flushes per sign).
    if backend not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip(f"{backend} unavailable")
    x = torch.randn(100, 40, 300)
    assert_close_to_reference(OP, backend, (x, make_mask(mask, 100, 40)), torch.float64)


@pytest.mark.parametrize("mask", MASKS)
def test_torch_chunks(monkeypatch, mask):
    monkeypatch.setattr(torch_fast, "_LINEAR_CHUNK_BYTES", 200)
    assert_close_to_reference(OP, "torch", (torch.randn(9, 3, 4), make_mask(mask, 9, 3)), torch.float64)


@pytest.mark.parametrize("backend", half_implementations(OP))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_gives_float32(backend, dtype):
    assert_close_to_reference(OP, backend, (torch.randn(5, 3, 4), torch.rand(5, 3) > 0.5), dtype)


@pytest.mark.parametrize("backend", implementations(OP))
def test_out_accumulates(backend):
    x, mask = torch.randn(5, 2, 4), torch.rand(5, 2) > 0.5
    with dtda.ops.use_backend("reference"):
        expected = 1.0 + dtda.ops.kron_covariance(x.double(), mask)
    out = torch.ones(4, 4)
    assert run(OP, backend, x, mask, out=out) is out
    torch.testing.assert_close(out, expected.float(), rtol=1e-5, atol=1e-5)


def test_cpp_deterministic():
    if "cpp" not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip("cpp unavailable")
    x, w = torch.randn(50, 7, 33), torch.randn(50, 7)
    assert torch.equal(run(OP, "cpp", x, w), run(OP, "cpp", x, w))


def test_opcheck():
    x = torch.randn(3, 2, 4)
    for mask in (None, torch.rand(3, 2) > 0.5, torch.randn(3, 2)):
        torch.library.opcheck(torch.ops.dtda.kron_covariance.default, (x, mask), test_utils=OPCHECK_QUICK)
    torch.library.opcheck(torch.ops.dtda.kron_covariance.default, (x.requires_grad_(), None))


@pytest.mark.parametrize("mask", MASKS)
def test_gradcheck(mask):
    x = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    m = make_mask(mask, 3, 2)
    m = m.double() if mask == "weights" else m
    assert torch.autograd.gradcheck(dtda.ops.kron_covariance, (x, m))


def test_mismatched_inputs_raise():
    x = torch.randn(4, 3, 5)
    with pytest.raises(ValueError, match=r"kron_covariance: mask has shape \[4, 2\], expected \[4, 3\]"):
        dtda.ops.kron_covariance(x, torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"kron_covariance: out has shape \[4, 4\], expected \[5, 5\]"):
        dtda.ops.kron_covariance(x, None, out=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="kron_covariance: mask must be bool or torch.float32"):
        dtda.ops.kron_covariance(x, torch.ones(4, 3, dtype=torch.int64))


def test_native_rejects_other_dtypes():
    native_dtype_rejected("kron_covariance", 8)


@pytest.mark.parametrize("backend", implementations(OP))
@pytest.mark.parametrize("mask", ["bool", "weights"])
def test_masked_positions_are_not_read(backend, mask):
    # The contract: a position whose mask is False or 0 is never read, so padding garbage (NaN,
    # Inf) there leaves the result equal to the one with zeros in its place.
    x = torch.randn(5, 3, 4)
    m = make_mask(mask, 5, 3)
    m[1, 2] = m[3, 0] = False if mask == "bool" else 0.0
    clean = x.clone()
    clean[1, 2] = clean[3, 0] = 0.0
    x[1, 2], x[3, 0, 1] = float("nan"), float("inf")
    with dtda.ops.use_backend("reference"):
        expected = dtda.ops.kron_covariance(clean.double(), m.double() if mask == "weights" else m)
    got = run(OP, backend, x, m)
    assert torch.isfinite(got).all(), f"{backend}: NaN/Inf at masked positions reached the result"
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_masked_positions_get_zero_gradient():
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    x[0, 1] = float("nan")
    x.requires_grad_()
    mask = torch.tensor([[True, False], [True, True], [False, True]])
    dtda.ops.kron_covariance(x, mask).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[0, 1] == 0).all() and (x.grad[2, 0] == 0).all()


@pytest.mark.parametrize("backend", implementations(OP))
def test_nan_weight_propagates(backend):
    # Only a zero weight skips a position; a NaN weight is not zero and makes the result NaN.
    w = torch.ones(4, 2)
    w[2, 1] = float("nan")
    assert torch.isnan(run(OP, backend, torch.randn(4, 2, 3), w)).all()
