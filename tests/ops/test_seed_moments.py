"""seed_moments: mean, var, cov(m, δ), exact variance increase and sorted-sample W2 over seeds,
every implementation against the reference and against closed forms."""

import math

import pytest
import torch
from harness import (assert_close_to_reference, dtypes_for, half_implementations, implementations, native_dtype_rejected,
                     noncontiguous, run, skip_unless_tiny)

import dtda.ops
from dtda.ops import SeedMoments
from dtda.ops.backends import torch_fast

OP = "seed_moments"
FIELDS = SeedMoments._fields

SHAPES = [  # (K, N, Q)
    (2, 1, 1),      # fewest seeds, one example, one measurement
    (3, 5, 7),      # primes
    (8, 8, 8),
    (5, 0, 3),      # N = 0
    (13, 17, 1),    # Q = 1
    (64, 11, 5),    # many seeds
    (5, 3001, 3),   # several C++ blocks (32768 / K values per block)
]
SCALES = [0.01, 10.0]  # δ small against the spread of m (m + δ nearly sorted) and large


def check(backend, m, delta, dtypes=None):
    for dtype in dtypes or dtypes_for(backend):
        assert_close_to_reference(OP, backend, (m, delta), dtype, fields=FIELDS)


@pytest.mark.parametrize("backend", implementations(OP))
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, scale, shape):
    skip_unless_tiny(backend, *shape)
    K, N, Q = shape
    check(backend, torch.randn(K, Q), scale * torch.randn(K, N, Q))


@pytest.mark.parametrize("backend", implementations(OP))
def test_ties(backend):
    # Integer samples with many ties: every sort order of equal values gives the same W2.
    m = torch.randint(0, 3, (7, 4)).float()
    delta = torch.randint(-1, 2, (7, 6, 4)).float()
    check(backend, m, delta)


@pytest.mark.parametrize("backend", implementations(OP))
def test_noncontiguous(backend):
    m, delta = noncontiguous(torch.randn(6, 5)), noncontiguous(torch.randn(6, 4, 5))
    assert not (m.is_contiguous() or delta.is_contiguous())
    check(backend, m, delta, [torch.float32])
    check(backend, torch.randn(3, 6)[:, ::2], torch.randn(3, 3, 7).permute(0, 2, 1), [torch.float32])


@pytest.mark.parametrize("backend", implementations(OP))
def test_proportional_effects_closed_form(backend):
    # δ_n = c_n (m − m̄) with 1 + c_n > 0 keeps the order of m, so
    # mean = 0, var = c² v, cov = c v, var_increase = ((1+c)² − 1) v, W2 = |c| √((K−1) v / K).
    K, Q = 7, 3
    m = torch.randn(K, Q, dtype=torch.float64)
    c = torch.tensor([0.5, -0.3, 2.0, 0.0], dtype=torch.float64)
    delta = c.view(1, -1, 1) * (m - m.mean(0)).unsqueeze(1)
    v = m.var(0).unsqueeze(0)
    c = c.view(-1, 1)
    expected = SeedMoments(torch.zeros_like(c * v), c**2 * v, c * v, ((1 + c) ** 2 - 1) * v,
                           c.abs() * ((K - 1) * v / K).sqrt())
    got = run(OP, backend, m.to(dtypes_for(backend)[-1]), delta.to(dtypes_for(backend)[-1]))
    tol = 1e-10 if dtypes_for(backend)[-1] == torch.float64 else 1e-5
    for name, g, e in zip(FIELDS, got, expected):
        torch.testing.assert_close(g.double(), e, rtol=tol, atol=tol, msg=lambda s, name=name: f"{name}: {s}")


@pytest.mark.parametrize("backend", implementations(OP))
def test_constant_effect_closed_form(backend):
    # δ_s = c for every seed: a pure shift, mean = c, W2 = |c|, no spread.
    K, Q = 6, 4
    m = torch.randn(K, Q)
    c = torch.tensor([1.5, -0.25, 0.0]).view(1, 3, 1)
    delta = c.expand(K, 3, Q).contiguous()
    got = run(OP, backend, m, delta)
    torch.testing.assert_close(got.mean, c[0].expand(3, Q))
    torch.testing.assert_close(got.w2, c[0].abs().expand(3, Q))
    for name in ("var", "cov", "var_increase"):
        torch.testing.assert_close(getattr(got, name), torch.zeros(3, Q), atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", [b for b in implementations(OP) if b.values[0] != "reference"])
def test_var_increase_without_cancellation(backend):
    # var(m+δ) − var(m) with var(m) ≫ var_increase: the float32 result must keep its relative
    # accuracy (the difference of two float32 variances would not).
    m = 1000.0 + 30.0 * torch.randn(8, 5, dtype=torch.float64)
    delta = 1e-3 * torch.randn(8, 6, 5, dtype=torch.float64) + 1e-4 * (m - m.mean(0)).unsqueeze(1)
    with dtda.ops.use_backend("reference"):
        exact = dtda.ops.seed_moments(m, delta).var_increase
    got = run(OP, backend, m.float(), delta.float()).var_increase.double()
    assert (got - exact).abs().max() <= 1e-4 * exact.abs().max()


@pytest.mark.parametrize("scale", SCALES)
def test_torch_chunks(monkeypatch, scale):
    monkeypatch.setattr(torch_fast, "_SEED_CHUNK", 40)  # several example chunks
    check("torch", torch.randn(4, 3), scale * torch.randn(4, 9, 3), [torch.float64])


@pytest.mark.parametrize("backend", half_implementations(OP))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_gives_float32(backend, dtype):
    assert_close_to_reference(OP, backend, (torch.randn(5, 3), torch.randn(5, 4, 3)), dtype, fields=FIELDS)


def test_cpp_deterministic():
    if "cpp" not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip("cpp unavailable")
    m, delta = torch.randn(9, 7), torch.randn(9, 500, 7)
    for a, b in zip(run(OP, "cpp", m, delta), run(OP, "cpp", m, delta)):
        assert torch.equal(a, b)


def test_nan_propagates_to_w2():
    if "cpp" not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip("cpp unavailable")
    m, delta = torch.randn(4, 2), torch.randn(4, 3, 2)
    delta[1, 2, 0] = math.nan
    m[0, 1] = math.nan
    w2 = run(OP, "cpp", m, delta).w2
    assert torch.isnan(w2[2, 0]) and torch.isnan(w2[:, 1]).all() and torch.isfinite(w2[:2, 0]).all()


def test_opcheck():
    m, delta = torch.randn(4, 3), torch.randn(4, 5, 3)
    torch.library.opcheck(torch.ops.dtda.seed_moments.default, (m, delta))
    torch.library.opcheck(torch.ops.dtda.seed_moments.default,
                          (m.double().requires_grad_(), delta.double().requires_grad_()))


def test_mismatched_inputs_raise():
    m, delta = torch.randn(4, 3), torch.randn(4, 5, 3)
    with pytest.raises(ValueError, match=r"seed_moments: delta has shape \[5, 5, 3\], expected \[4, \?, 3\]"):
        dtda.ops.seed_moments(m, torch.randn(5, 5, 3))  # K mismatch
    with pytest.raises(ValueError, match=r"seed_moments: delta has shape \[4, 5, 2\], expected \[4, \?, 3\]"):
        dtda.ops.seed_moments(m, torch.randn(4, 5, 2))  # Q mismatch
    with pytest.raises(ValueError, match=r"seed_moments: m must hold at least 2 seeds along dim 0, got shape \[1, 3\]"):
        dtda.ops.seed_moments(m[:1], delta[:1])
    with pytest.raises(ValueError, match=r"seed_moments: delta must be 3-D, got shape \[4, 3\]"):
        dtda.ops.seed_moments(m, m)
    with pytest.raises(ValueError, match="seed_moments: delta"):
        dtda.ops.seed_moments(m, delta.double())


def test_native_rejects_other_dtypes():
    native_dtype_rejected("seed_moments", 12)
