"""The CUDA kernels of csrc/cuda on the CPU: dtda._C_cuda_emu (built with DTDA_CUDA_EMULATION=ON
from the same sources by the host compiler against the emulation of csrc/cuda_host) against the
float64 reference, with the tolerance rule of harness.py and poisoned outputs.

The adapters of dtda/ops/backends/cuda.py run unchanged through the public ops: a test-only
backend "cuda-emulated" registers those same adapter functions for CPU tensors, and only the
lookup of the module, device and stream is redirected (``_launch``, ``torch.cuda.device`` and
``_native.load_cuda``), so CPU data pointers reach the emulated kernels.

Shapes cross the 64-wide output tiles (1, 17, 63, 65, 130) and the emulated SM count is set to 1
or 132, which moves the split-K / split-batch planning; a few cases shrink the workspace budget so
that examples go in several chunks. Each case names the plan it expects (``split`` or ``whole``,
``chunks``) and checks from the kernel launches that this plan ran. The emulation runs each CUDA
thread as a fiber, so shapes stay small. The last tests check the emulation itself (a missing
barrier, a partial-warp shuffle, a divergent barrier, block order, half conversions) and
csrc/cuda_host/translate.py. Without the module the tests skip, unless DTDA_CUDA_EMULATION=ON (CI),
where they fail.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import math
import os
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from harness import assert_close_to_reference, run
from test_cuda_build import ATTRIBUTES, FUNCTIONS
from test_empty import params as empty_cases
from test_jl_project import fast_reference

import dtda.ops
from dtda import _native
from dtda.ops import SeedMoments, reference, registry
from dtda.ops.backends import cuda as cuda_backend

BACKEND = "cuda-emulated"
SPLIT_KERNEL = "sum_splits_kernel<Acc>"
GEMM_KERNEL = "gemm_kernel<Acc, LoadA, LoadB>"
FLOATS = [torch.float32, torch.float64]
HALVES = [torch.float16, torch.bfloat16]


def _module():
    try:
        return importlib.import_module("dtda._C_cuda_emu")
    except ImportError as exc:
        why = f"dtda._C_cuda_emu is not built (build with DTDA_CUDA_EMULATION=ON): {exc}"
        if os.environ.get("DTDA_CUDA_EMULATION", "").upper() == "ON":
            pytest.fail(f"DTDA_CUDA_EMULATION=ON but {why}", pytrace=False)
        pytest.skip(why)


@pytest.fixture
def emu(monkeypatch):
    """The emulation module, with the cuda adapters routed to it for CPU tensors."""
    module = _module()
    monkeypatch.setattr(_native, "load_cuda", lambda: module)
    monkeypatch.setattr(cuda_backend, "_launch",
                        lambda like: (module, _native.DTYPE_CODES[like.dtype], 0, 0))  # device 0, stream 0
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    cuda = registry.backends()["cuda"]
    emulated = registry.Backend(name=BACKEND, priority=-1000, devices=frozenset({"cpu"}), dtypes=cuda.dtypes,
                                unavailable=lambda: "", auto=False, ops=cuda.ops, limits=cuda.limits)
    monkeypatch.setitem(registry._BACKENDS, BACKEND, emulated)  # removed again after the test
    sms, budget = module.emulation.sm_count(), module.emulation.workspace_bytes()
    module.emulation.reset_launch_counts()
    yield module
    module.emulation.set_sm_count(sms)
    module.emulation.set_workspace_bytes(budget)


class Case(NamedTuple):
    shape: tuple
    sms: int      # the SM count the emulated device reports
    split: bool   # whether the plan makes partial results (sum_splits_kernel runs)
    dtypes: tuple
    budget: int   # workspace bytes the plan may use
    per_chunk: tuple | None  # with a small budget: (a kernel, its launches per chunk of examples)


def case(name: str, shape: tuple, sms: int, split: bool, dtypes=FLOATS, budget: int = 2**30,
         per_chunk: tuple | None = None):
    tags = [name, f"sms={sms}", "split" if split else "whole"]
    if per_chunk:
        tags.append(f"chunks(budget={budget}B)")
    return pytest.param(Case(shape, sms, split, tuple(dtypes), budget, per_chunk), id=",".join(tags))


def check(emu, op: str, c: Case, args: tuple, fields=None, ref_fn=None) -> None:
    """Every dtype of ``c`` against the float64 reference, each run following the plan ``c``
    names: split or whole, and in several chunks when ``c.per_chunk`` says by which kernel."""
    emu.emulation.set_sm_count(c.sms)
    emu.emulation.set_workspace_bytes(c.budget)
    for dtype in c.dtypes:
        emu.emulation.reset_launch_counts()
        assert_close_to_reference(op, BACKEND, args, dtype, ref_fn=ref_fn, fields=fields)
        launches = emu.emulation.launch_counts()
        assert (launches.get(SPLIT_KERNEL, 0) > 0) == c.split, \
            f"{op} {dtype}: expected the {'split' if c.split else 'whole'} plan, launches {launches}"
        if c.per_chunk:
            kernel, per_chunk = c.per_chunk
            assert launches.get(kernel, 0) > per_chunk, f"{op} {dtype}: expected several chunks, launches {launches}"


# ---- the module ---------------------------------------------------------------------------------

def test_entry_points_match_the_cuda_module(emu):
    assert all(callable(getattr(emu, name)) for name in FUNCTIONS)
    assert all(hasattr(emu, name) for name in ATTRIBUTES)
    assert emu.archs == "host-emulation"


# ---- the seven ops ------------------------------------------------------------------------------
# kron_covariance: one symmetric GEMM (upper tiles mirrored); N·T rows split by 256 when the D × D
# tiles leave SMs idle.

@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("c", [
    case("N=1,T=1,D=1", (1, 1, 1), 132, False, FLOATS + HALVES),
    case("N=3,T=5,D=17", (3, 5, 17), 132, False, FLOATS + HALVES),
    case("N=2,T=3,D=130", (2, 3, 130), 1, False),    # 3 × 3 tiles, 6 of them computed
    case("N=300,T=2,D=65", (300, 2, 65), 132, True),  # 600 rows in 2 partials, mirrored tile
    case("N=600,T=1,D=63", (600, 1, 63), 1, True),    # one tile: even 1 SM asks for partials
    case("N=520,T=1,D=130", (520, 1, 130), 132, True),  # 6 tiles in 2 partials each
])
def test_kron_covariance(emu, c, masked):
    N, T, D = c.shape
    mask = (torch.rand(N, T) > 0.3) if masked else None
    check(emu, "kron_covariance", c, (torch.randn(N, T, D), mask))


@pytest.mark.parametrize("dtype", FLOATS + HALVES, ids=str)
def test_kron_covariance_masked_positions_are_not_read(emu, dtype):
    # The mask contract (docs/ops.md): NaN/Inf under a zero mask never reaches the result.
    x, mask = torch.randn(6, 3, 17), torch.rand(6, 3) > 0.3
    mask[2, 1] = mask[4, 0] = False
    clean = x.clone()
    clean[2, 1] = clean[4, 0] = 0.0
    x[2, 1], x[4, 0, 3] = float("nan"), float("inf")
    for m in (mask, mask.to(dtype)):
        got = run("kron_covariance", BACKEND, x.to(dtype), m)
        expected = reference.kron_covariance(clean.double(), m.double())
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), expected, rtol=2e-2, atol=2e-2)


# ghost_dot: tokens (T·Q ≤ T + Q) or per-example gradients with the O·I reduction split.
@pytest.mark.parametrize("c", [
    case("N=1,T=1,I=1,O=1,Q=1,tokens", (1, 1, 1, 1, 1), 132, False, FLOATS + HALVES),
    case("N=3,T=1,I=17,O=65,Q=2,tokens", (3, 1, 17, 65, 2), 132, False, FLOATS + HALVES),
    case("N=2,T=3,I=63,O=17,Q=1,tokens", (2, 3, 63, 17, 1), 1, False),
    case("N=5,T=2,I=65,O=17,Q=3,gradients", (5, 2, 65, 17, 3), 132, True),
    case("N=130,T=2,I=9,O=5,Q=65,gradients", (130, 2, 9, 5, 65), 1, False),  # 3 × 2 tiles
    case("N=130,T=1,I=17,O=65,Q=2,tokens", (130, 1, 17, 65, 2), 132, False, budget=16384,
         per_chunk=("dot_tokens_reduce<T, Acc>", 1)),
    case("N=7,T=2,I=65,O=9,Q=3,gradients", (7, 2, 65, 9, 3), 132, True, budget=8192, per_chunk=(SPLIT_KERNEL, 1)),
])
def test_ghost_dot(emu, c):
    N, T, I, O, Q = c.shape
    check(emu, "ghost_dot", c, (torch.randn(N, T, I), torch.randn(N, T, O), torch.randn(Q, O, I)))


# ghost_pairwise: token Gram products or gradients (G_q once, G_n per chunk, O·I split).
@pytest.mark.parametrize("c", [
    case("Q=1,S=1,N=1,T=1,I=1,O=1,tokens", (1, 1, 1, 1, 1, 1), 132, False, FLOATS + HALVES),
    case("Q=2,S=1,N=65,T=1,I=17,O=63,tokens", (2, 1, 65, 1, 17, 63), 132, False),
    case("Q=2,S=9,N=3,T=7,I=5,O=3,gradients", (2, 9, 3, 7, 5, 3), 1, False, FLOATS + HALVES),
    case("Q=1,S=65,N=1,T=65,I=32,O=31,gradients", (1, 65, 1, 65, 32, 31), 132, True),
    case("Q=2,S=1,N=65,T=1,I=17,O=63,tokens", (2, 1, 65, 1, 17, 63), 132, False, budget=256,
         per_chunk=("pair_tokens_reduce<Acc>", 1)),
    case("Q=1,S=40,N=4,T=40,I=32,O=32,gradients", (1, 40, 4, 40, 32, 32), 132, True, budget=16384,
         per_chunk=(SPLIT_KERNEL, 1)),
])
def test_ghost_pairwise(emu, c):
    Q, S, N, T, I, O = c.shape
    check(emu, "ghost_pairwise", c,
          (torch.randn(Q, S, I), torch.randn(Q, S, O), torch.randn(N, T, I), torch.randn(N, T, O)))


def _orthogonal(n: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))[0].float()


# ekfac_eigvals: T = 1 rank-1 GEMM over n (split by 256 examples) or T > 1 per-example products
# squared and summed over n inside the GEMM (split by 4 examples).
@pytest.mark.parametrize("c", [
    case("N=1,T=1,I=1,O=1,rank1", (1, 1, 1, 1), 132, False, FLOATS + HALVES),
    case("N=600,T=1,I=17,O=9,rank1", (600, 1, 17, 9), 132, True),
    case("N=9,T=3,I=17,O=65,batch", (9, 3, 17, 65), 132, True, FLOATS + HALVES),
    case("N=9,T=3,I=130,O=65,batch", (9, 3, 130, 65), 1, False),  # 2 × 3 tiles
    # Chunks of examples add into the partials of the split: the Add epilogue across chunks.
    case("N=1100,T=1,I=3,O=2,rank1", (1100, 1, 3, 2), 132, True, budget=20480, per_chunk=(GEMM_KERNEL, 3)),
    case("N=20,T=2,I=17,O=9,batch", (20, 2, 17, 9), 132, True, budget=3328, per_chunk=(GEMM_KERNEL, 3)),
])
def test_ekfac_eigvals(emu, c):
    N, T, I, O = c.shape
    check(emu, "ekfac_eigvals", c, (torch.randn(N, T, I), torch.randn(N, T, O), _orthogonal(I), _orthogonal(O)))


def test_ekfac_eigvals_adds_into_out(emu):
    N, T, I, O = 9, 2, 17, 65  # 9 examples: 2 partials of the batch sum
    args = (torch.randn(N, T, I), torch.randn(N, T, O), _orthogonal(I), _orthogonal(O), torch.randn(O, I))

    def with_out(a, g, QA, QS, out):
        return dtda.ops.ekfac_eigvals(a, g, QA, QS, out.clone())

    check(emu, "ekfac_eigvals", case("", (N, T, I, O), 132, True).values[0], args, ref_fn=with_out)
    out = args[-1].clone()
    got = run("ekfac_eigvals", BACKEND, *args[:-1], out=out)
    assert got is out


# kron_apply: four batched GEMMs over q with the scale in the second one's epilogue (no splits).
@pytest.mark.parametrize("c", [
    case("Q=1,O=1,I=1", (1, 1, 1), 132, False, FLOATS + HALVES),
    case("Q=3,O=17,I=65", (3, 17, 65), 132, False, FLOATS + HALVES),
    case("Q=2,O=130,I=63", (2, 130, 63), 1, False),
])
def test_kron_apply(emu, c):
    Q, O, I = c.shape
    scale = 1.0 / (torch.rand(O, I) + 0.1)
    check(emu, "kron_apply", c, (torch.randn(Q, O, I), _orthogonal(I), _orthogonal(O), scale))


# jl_project: Y = X R / √k with R regenerated in shared memory; P split by 256.
@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
@pytest.mark.parametrize("c", [
    case("N=1,P=1,k=1", (1, 1, 1), 132, False, FLOATS + HALVES),
    case("N=17,P=63,k=130", (17, 63, 130), 132, False, FLOATS + HALVES),
    case("N=65,P=600,k=17", (65, 600, 17), 132, True),
    case("N=130,P=600,k=65", (130, 600, 65), 1, False),  # 3 × 2 tiles
])
def test_jl_project(emu, c, kind):
    N, P, k = c.shape
    # Above ~10⁴ entries of R, the per-entry Python Philox of reference.jl_matrix is slow: the same
    # formula with R from torch_fast's generator (held to jl_matrix in test_jl_project).
    ref_fn = fast_reference if P * k > 10_000 else None
    check(emu, "jl_project", c, (torch.randn(N, P), k, 2**40 + 3, kind), ref_fn=ref_fn)


@functools.lru_cache(maxsize=2)
def _rademacher(P: int, k: int) -> torch.Tensor:
    return reference.jl_matrix(P, k, 2**40 + 3, "rademacher", dtype=torch.float64)  # ±1: exact in any dtype


@pytest.mark.parametrize("c", [
    case("P=65,k=130", (65, 130), 132, False),
    case("P=520,k=65", (520, 65), 1, False),  # 9 × 2 tiles
    case("P=520,k=65", (520, 65), 132, True),
])
def test_jl_project_rademacher_is_bit_identical(emu, c):
    # X = I gives R / √k: every Rademacher entry exactly as reference.jl_matrix makes it (the
    # partials of the split plan are exact: one of them holds the entry, the others zeros).
    P, k = c.shape
    emu.emulation.set_sm_count(c.sms)
    R = _rademacher(P, k)
    for dtype in c.dtypes:
        got = run("jl_project", BACKEND, torch.eye(P, dtype=dtype), k, 2**40 + 3, "rademacher")
        assert torch.equal(got, R.to(dtype) / math.sqrt(k)), f"{dtype}: Rademacher entries differ"
    assert (emu.emulation.launch_counts().get(SPLIT_KERNEL, 0) > 0) == c.split


# seed_moments: one thread per (n, q), K values sorted in a per-thread array of 32 … 256.
@pytest.mark.parametrize("c", [
    case("K=2,N=1,Q=1", (2, 1, 1), 132, False, FLOATS + HALVES),
    case("K=17,N=65,Q=3", (17, 65, 3), 132, False, FLOATS + HALVES),  # 195 threads: 2 blocks
    case("K=63,N=2,Q=5,cap=64", (63, 2, 5), 1, False),
    case("K=256,N=3,Q=2,cap=256", (256, 3, 2), 132, False),
])
def test_seed_moments(emu, c):
    K, N, Q = c.shape
    check(emu, "seed_moments", c, (torch.randn(K, Q), torch.randn(K, N, Q)), fields=SeedMoments._fields)


def test_seed_moments_beyond_the_seed_limit_raises(emu):
    m, delta = torch.randn(257, 2), torch.randn(257, 3, 2)
    assert emu.SEED_MOMENTS_MAX_K == 256
    with pytest.raises(RuntimeError, match="forced backend 'cuda-emulated' cannot run: it sorts at most 256 "
                                           "seeds per thread, got K = 257"):
        run("seed_moments", BACKEND, m, delta)
    with pytest.raises(ValueError, match=r"seed_moments: K must be in \[2, 256\].*got K = 257"):
        cuda_backend.seed_moments(m, delta)  # the adapter without the registry's check: the kernel refuses


# Empty extents: outputs of zero size, or reductions over nothing that must write zeros (every
# extent of every op at 0 once, the table of test_empty.py).
@pytest.mark.parametrize("op,args", empty_cases())
def test_empty_extents(emu, op, args):
    fields = SeedMoments._fields if op == "seed_moments" else None
    for dtype in FLOATS:
        assert_close_to_reference(op, BACKEND, args(), dtype, fields=fields)


# ---- the emulation itself -----------------------------------------------------------------------

def test_missing_barrier_gives_wrong_results(emu):
    x = torch.randn(3, 256)
    out = torch.full_like(x, math.nan)
    emu.emulation.reverse_in_block(x.data_ptr(), out.data_ptr(), 3, 256, True)
    assert torch.equal(out, x.flip(1))
    out.fill_(math.nan)
    emu.emulation.reverse_in_block(x.data_ptr(), out.data_ptr(), 3, 256, False)
    # Threads scheduled before their mirror read its slot unwritten: poisoned shared memory (NaN).
    wrong = out.isnan()
    assert 0 < int(wrong.sum()) < out.numel() and torch.equal(out[~wrong], x.flip(1)[~wrong])


def test_warp_sum_reduces_each_warp(emu):
    x = torch.randn(2 * 256)
    out = torch.full((16,), math.nan)
    emu.emulation.warp_sums(x.data_ptr(), out.data_ptr(), 2, 256)
    torch.testing.assert_close(out, x.view(16, 32).sum(1))


def test_shuffle_reached_by_part_of_a_warp_raises(emu):
    x, out = torch.randn(64), torch.zeros(2)
    with pytest.raises(RuntimeError, match=r"kernel warp_sums, block \(0, 0, 0\): deadlock: __shfl_down_sync at "
                                           r".*common\.cuh:\d+ in warp 0 waits for lanes 16-31, which exited"):
        emu.emulation.warp_sums(x.data_ptr(), out.data_ptr(), 1, 64, 16)


def test_divergent_barrier_raises(emu):
    out = torch.zeros(64)
    with pytest.raises(RuntimeError, match=r"divergent __syncthreads .*threads 0-15 wait in __syncthreads at "
                                           r".*selftest\.cu:\d+; threads 16-63 wait in __syncthreads at"):
        emu.emulation.divergent_barrier(out.data_ptr(), 64, 16)


def test_invalid_launch_configuration_reaches_check_launch(emu):
    x = torch.zeros(2048)
    with pytest.raises(RuntimeError, match="reverse_in_block failed: invalid configuration argument"):
        emu.emulation.reverse_in_block(x.data_ptr(), x.data_ptr(), 1, 2048, True)


def test_static_shared_memory_over_48_kib_raises(emu):
    out = torch.zeros(32, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"kernel too_much_shared, .*static shared memory of 49160 bytes \(with "
                                           r"big at .*selftest\.cu:\d+\) exceeds the 48 KiB limit"):
        emu.emulation.too_much_shared(out.data_ptr())


def test_blocks_run_last_first(emu):
    order, counter = torch.full((5,), -1, dtype=torch.int32), torch.zeros(1, dtype=torch.int32)
    emu.emulation.block_order(order.data_ptr(), counter.data_ptr(), 5)
    assert order.tolist() == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("dtype", HALVES, ids=str)
def test_half_conversions_are_exact(emu, dtype):
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)  # every 16-bit pattern
    out = torch.full((bits.numel(),), math.nan)
    emu.emulation.widen(bits.data_ptr(), out.data_ptr(), bits.numel(), _native.DTYPE_CODES[dtype])
    expected = bits.view(dtype).float()
    nan = expected.isnan()
    assert torch.equal(out.isnan(), nan)
    assert torch.equal(out[~nan].view(torch.int32), expected[~nan].view(torch.int32))  # bit for bit, ±0 too


# ---- translate.py (no module needed) ------------------------------------------------------------

def _translate_module():
    path = Path(__file__).resolve().parents[2] / "csrc" / "cuda_host" / "translate.py"
    spec = importlib.util.spec_from_file_location("dtda_cuda_translate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_translate_rewrites_launches_and_shared_memory_keeping_lines(tmp_path):
    translate = _translate_module()
    source = tmp_path / "k.cu"
    source.write_text(
        "// k<<<1, 2>>>(x) in a comment stays\n"
        "__global__ void k(float* p) { __shared__ Slice<float, 2> a, b[4]; }\n"
        "void f(cudaStream_t s) {\n"
        "  ns::kern<A<B>, C><<<dim3(g, 2), kThreads, 0, s>>>(p,\n"
        "      q);\n"
        "  simple<<<blocks, 256>>>();\n"
        '  const char* t = "x<<<y>>>()";\n'
        "}\n")
    text = translate.translate(source)
    lines = text.split("\n")
    assert lines[0] == f'#line 1 "{source.resolve()}"' and len(lines) == 1 + len(source.read_text().split("\n"))
    assert lines[1] == "// k<<<1, 2>>>(x) in a comment stays"
    assert lines[2] == ('__global__ void k(float* p) { static thread_local Slice<float, 2> a, b[4]; '
                        '::dtda::emu::shared(a, "a", __FILE__, __LINE__); ::dtda::emu::shared(b, "b", __FILE__, '
                        '__LINE__); }')
    assert lines[4] == ('  ::dtda::emu::launch("ns::kern<A<B>, C>", ns::kern<A<B>, C>, dim3(g, 2), kThreads, 0, s, '
                        'p,')
    assert lines[5] == "      q);"
    assert lines[6] == '  ::dtda::emu::launch("simple", simple, blocks, 256, 0, nullptr);'
    assert lines[7] == '  const char* t = "x<<<y>>>()";'


def test_translate_refuses_dynamic_shared_memory(tmp_path):
    translate = _translate_module()
    source = tmp_path / "d.cu"
    source.write_text("__global__ void k() {\n  extern __shared__ float s[];\n}\n")
    with pytest.raises(translate.TranslateError, match=r"d\.cu:2: extern __shared__ .* is not emulated"):
        translate.translate(source)


def test_gpu_check_cases_on_the_emulation(emu):
    """benchmarks/gpu_check.py's correctness pass, as the GPU session will run it, on the
    emulated kernels (float32): every case passes, so a failure there is the GPU's news."""
    from benchmarks import gpu_check

    emu.emulation.set_sm_count(132)  # an H100/H200-sized plan
    failures = []
    for op in gpu_check.OPS:
        for index, case_ in enumerate(gpu_check.CASES[op]):
            result = gpu_check._check(dict(op=op, backend=BACKEND, dtype="float32", case=case_, index=index,
                                           device="cpu"))
            if result["status"] != "PASS":
                failures.append((op, case_, result))
    assert not failures, failures
