"""jl_project: Y = X R / √k with R regenerated from Philox counters, every implementation against
the reference; Rademacher entries bit-identical everywhere."""

import functools
import math

import pytest
import torch
from harness import (assert_close_to_reference, dtypes_for, half_implementations, implementations, noncontiguous,
                     run, skip_unless_tiny)

import dtda.ops
from dtda import _native
from dtda.ops import reference
from dtda.ops.backends import torch_fast

OP = "jl_project"
KINDS = ["rademacher", "gaussian"]
SEEDS = [0, 1, 2**40 + 3]  # the last one needs both key words

SHAPES = [  # (N, P, k)
    (1, 1, 1),       # all size 1
    (3, 5, 7),       # primes
    (8, 8, 8),
    (0, 5, 3),       # N = 0
    (2, 0, 5),       # P = 0: zeros
    (130, 50, 100),  # one column block split over row groups of X (C++)
]
LARGE_SHAPES = [  # R too large for the per-entry reference Philox to be quick
    (3, 4099, 129),    # P over one C++ tile (4096 rows at 128 columns); k = 128 + 1
    (20, 300, 1031),   # several column blocks; k not a multiple of 128
]


@functools.lru_cache(maxsize=2)
def _matrix(P, k, seed, kind):
    return torch_fast._jl_rows(0, P, k, seed, kind, torch.float64, torch.device("cpu"))


def fast_reference(x, k, seed, kind):
    """The reference formula with R from torch_fast's row generator, which
    test_identity_reproduces_matrix holds to reference.jl_matrix (computed once per matrix, in
    float64, and rounded like jl_matrix rounds)."""
    x = x.to(reference.result_dtype(x.dtype))
    return (x @ _matrix(x.shape[1], k, seed, kind).to(x.dtype)) / math.sqrt(k)


def _cpp_available():
    if "cpp" not in dtda.ops.candidates(OP, torch.device("cpu"), torch.float32):
        pytest.skip("cpp unavailable")


@pytest.mark.parametrize("backend", implementations(OP))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(backend, kind, shape):
    skip_unless_tiny(backend, *shape)
    N, P, k = shape
    x = torch.randn(N, P)
    for dtype in dtypes_for(backend):
        assert_close_to_reference(OP, backend, (x, k, 2**40 + 3, kind), dtype)


@pytest.mark.parametrize("backend", [b for b in implementations(OP) if b.values[0] != "reference"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", LARGE_SHAPES, ids=str)
def test_large_matches_reference(backend, kind, shape):
    skip_unless_tiny(backend, *shape)
    N, P, k = shape
    args = (torch.randn(N, P), k, 2**40 + 3, kind)
    for dtype in dtypes_for(backend):
        assert_close_to_reference(OP, backend, args, dtype, ref_fn=fast_reference)


@pytest.mark.parametrize("backend", implementations(OP))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(8, 8), (37, 300)], ids=str)
def test_identity_reproduces_matrix(backend, seed, kind, shape):
    # X = I gives R / √k: Rademacher bit for bit, Gaussian up to the last bits of log and cos.
    skip_unless_tiny(backend, *shape)
    P, k = shape
    for dtype in dtypes_for(backend):
        got = run(OP, backend, torch.eye(P, dtype=dtype), k, seed, kind)
        expected = reference.jl_matrix(P, k, seed, kind, dtype=dtype) / math.sqrt(k)
        if kind == "rademacher":
            assert torch.equal(got, expected), f"{backend} {dtype}: Rademacher entries differ"
        else:
            torch.testing.assert_close(got, expected, rtol=4 * torch.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("backend", implementations(OP))
@pytest.mark.parametrize("kind", KINDS)
def test_noncontiguous(backend, kind):
    x = noncontiguous(torch.randn(6, 7))
    assert not x.is_contiguous()
    assert_close_to_reference(OP, backend, (x, 5, 1, kind), torch.float32)
    assert_close_to_reference(OP, backend, (torch.randn(7, 6).T, 3, 0, kind), torch.float32)


def test_seeds_and_kinds_give_different_matrices():
    R = {(s, kind): reference.jl_matrix(64, 64, s, kind) for s in SEEDS for kind in KINDS}
    for a in R:
        for b in R:
            assert a == b or not torch.equal(R[a], R[b]), (a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_torch_chunks(monkeypatch, kind):
    monkeypatch.setattr(torch_fast, "_JL_CHUNK", 300)  # several row chunks of R
    assert_close_to_reference(OP, "torch", (torch.randn(4, 23), 131, 2**40 + 3, kind), torch.float64)


@pytest.mark.parametrize("backend", half_implementations(OP))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_gives_float32(backend, dtype):
    assert_close_to_reference(OP, backend, (torch.randn(5, 9), 6, 1, "gaussian"), dtype)


@pytest.mark.parametrize("kind", KINDS)
def test_cpp_deterministic_across_calls_and_close_across_threads(kind):
    _cpp_available()
    x = torch.randn(150, 700, dtype=torch.float64)
    first = run(OP, "cpp", x, 300, 7, kind)
    assert torch.equal(first, run(OP, "cpp", x, 300, 7, kind))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        other = run(OP, "cpp", x, 300, 7, kind)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(other, first, rtol=1e-12, atol=1e-12)


def test_opcheck():
    x = torch.randn(3, 10)
    torch.library.opcheck(torch.ops.dtda.jl_project.default, (x, 5, 1, "rademacher"))
    torch.library.opcheck(torch.ops.dtda.jl_project.default, (x.double().requires_grad_(), 4, 2**40 + 3, "gaussian"))


def test_gradcheck():
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: dtda.ops.jl_project(t, 4, 2, "gaussian"), (x,))


def test_bad_arguments_raise():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="jl_project: k must be a positive int, got 0"):
        dtda.ops.jl_project(x, 0, 1)
    with pytest.raises(ValueError, match=r"jl_project: seed must be an int in \[0, 2\*\*63\), got -1"):
        dtda.ops.jl_project(x, 2, -1)
    with pytest.raises(ValueError, match="jl_project: kind must be 'rademacher' or 'gaussian', got 'uniform'"):
        dtda.ops.jl_project(x, 2, 1, "uniform")
    with pytest.raises(ValueError, match=r"jl_project: x must be 2-D, got shape \[3, 4, 1\]"):
        dtda.ops.jl_project(x.unsqueeze(-1), 2, 1)


def test_native_rejects_bad_arguments():
    module = _native.load_cpu()
    if module is None:
        pytest.skip(_native.why_not("_C"))
    half = _native.DTYPE_CODES[torch.float16]
    with pytest.raises(ValueError, match="jl_project: the CPU kernel supports float32 and float64, got float16"):
        module.jl_project(0, 0, 1, 1, 1, 0, "rademacher", half, 1)
    with pytest.raises(ValueError, match="jl_project: kind must be 'rademacher' or 'gaussian', got 'normal'"):
        module.jl_project(0, 0, 1, 1, 1, 0, "normal", _native.DTYPE_CODES[torch.float32], 1)


BIG_K = 2**31  # one past the 32-bit sizes of the C++ kernel's OpenBLAS


@pytest.mark.parametrize("kind", KINDS)
def test_native_refuses_sizes_past_32_bits(kind):
    # Before any BLAS call (OpenBLAS would only print to stderr and leave Y unwritten): a
    # ValueError naming the size. Null pointers: the check must come before any access.
    module = _native.load_cpu()
    if module is None:
        pytest.skip(_native.why_not("_C"))
    f32 = _native.DTYPE_CODES[torch.float32]
    for N, P, k, name in ((1, 1, BIG_K, "k"), (1, BIG_K, 1, "P"), (BIG_K, 1, 1, "N")):
        with pytest.raises(ValueError, match=rf"jl_project: {name} = {BIG_K} exceeds 2\^31 - 1"):
            module.jl_project(0, 0, N, P, k, 0, kind, f32, 1)


def test_cpp_declares_its_index_limit():
    _cpp_available()
    x = torch.randn(0, 3)
    with pytest.raises(RuntimeError, match=rf"forced backend 'cpp' cannot run: .*k = {BIG_K}.*2\^31 - 1"):
        run(OP, "cpp", x, BIG_K, 1)
    assert dtda.ops.registry.select(OP, x.device, x.dtype, (x, BIG_K, 1, "rademacher"))[0] == "torch"


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_empty_input_with_huge_k(backend):
    # No R is generated for an empty x (the torch backend used to build rows of 2³¹ entries).
    y = run(OP, backend, torch.randn(0, 3), BIG_K, 1)
    assert y.shape == (0, BIG_K)
    assert run(OP, backend, torch.randn(2, 0), 5, 1).eq(0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_torch_tiles_are_bounded_for_any_k(monkeypatch, kind):
    # R is generated in tiles of at most about _JL_CHUNK entries, however large k is.
    monkeypatch.setattr(torch_fast, "_JL_CHUNK", 256)
    sizes = []
    rows = torch_fast._jl_rows

    def spy(*args, **kwargs):
        tile = rows(*args, **kwargs)
        sizes.append(tile.numel())
        return tile

    monkeypatch.setattr(torch_fast, "_jl_rows", spy)
    assert_close_to_reference(OP, "torch", (torch.randn(3, 5), 700, 2**40 + 3, kind), torch.float64)
    assert max(sizes) <= 256
