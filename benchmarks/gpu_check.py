"""One call on a GPU machine: build dtda's CUDA module if needed, check every CUDA, Triton and
torch-backend op against the float64 reference, time them against the GPU's own ceilings, and
print a short table last.

    python benchmarks/gpu_check.py [--quick] [--ops a,b] [--no-build] [--time-budget SECONDS]

1. Build (unless ``--no-build`` or ``dtda._C_cuda`` already imports): ``DTDA_CUDA=ON pip install
   --no-build-isolation --no-deps -e .``, then the same with build isolation (needs an index),
   then a direct CMake build into ``build/gpu`` whose modules are copied into ``dtda/``. Each
   attempt and why it failed is printed; missing build tools are named.
2. Correctness, never skipped: each op on awkward shapes, forced onto each backend with poisoned
   (NaN) outputs and NaN guard zones around inputs and outputs (dtda.ops.alloc), against the float64 reference, with the rule of tests/ops/harness.py:
   ``max|impl − ref64| ≤ 3·max|ref_dtype − ref64| + eps_dtype·max(1, max|ref64|)``. float32 and
   float64 (cuda, torch), float16 and bfloat16 (cuda, triton, torch). Rademacher projections are
   also checked bit for bit. Every case prints PASS/FAIL/SKIP with its error and bound.
3. Timings (CUDA events, median of 10 after warm-up) on the issue's shapes, float32 and
   bfloat16, as a ratio to the ``torch`` backend and as fractions of the measured torch.mm
   TFLOP/s (fp32 without TF32, bf16) and device-to-device copy GB/s. Timings stop when the
   time budget is spent (correctness always runs).
4. End to end: EK-FAC influence of a small digits ensemble on the GPU against the same call on the
   CPU (``benchmarks/gpu_influence.py``), unless ``--no-influence``.
5. A table last; with ``$OUT`` set, everything also goes to ``$OUT/gpu_check.json``.

Checks and timings run in a worker process; a kernel that kills its CUDA context (illegal
address) is recorded as a failure and the worker restarts after it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the repository's dtda (the direct build copies modules into it)

OPS = ("kron_covariance", "ghost_dot", "ghost_pairwise", "ekfac_eigvals", "kron_apply", "jl_project",
       "seed_moments")
BACKENDS = ("cuda", "triton", "torch")
CHECK_DTYPES = {
    "cuda": ("float32", "float64", "float16", "bfloat16"),
    "triton": ("float32", "float16", "bfloat16"),
    "torch": ("float32", "float64", "float16", "bfloat16"),
}
TIME_DTYPES = ("float32", "bfloat16")
TIME_REPEATS = 10
# The tolerance rule of tests/ops/harness.py (kept here so the script needs no pytest).
C_FACTOR = 3.0
EPS = {"float64": 1e-12, "float32": 2e-6, "float16": 2e-3, "bfloat16": 1.6e-2}


def say(*parts) -> None:
    print(*parts, flush=True)


# ---- 1. build ------------------------------------------------------------------------------------

def _cuda_module_imports() -> tuple[bool, str]:
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import torch, dtda._C_cuda as m; "
            "print('dtda._C_cuda', m.__file__, 'archs', m.archs)")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, lines[-1] if lines else f"exit code {proc.returncode}"


def _attempt(label: str, cmd: list[str], env: dict, log: list[str], timeout: int = 1500) -> bool:
    say(f"[build] trying: {label}\n        $ {' '.join(cmd)}")
    start = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        ok, out = proc.returncode == 0, proc.stdout + proc.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, out = False, str(exc)
    tail = "\n".join(out.strip().splitlines()[-15:])
    log.append(f"{label}: {'ok' if ok else 'failed'} after {time.time() - start:.0f} s")
    say(f"[build] {label}: {'ok' if ok else 'FAILED'} after {time.time() - start:.0f} s")
    if not ok:
        say("        " + tail.replace("\n", "\n        "))
    return ok


def _direct_cmake(env: dict, log: list[str]) -> bool:
    """Configure and build with CMake into build/gpu, then copy the modules into dtda/."""
    missing = []
    cmake = shutil.which("cmake")
    if cmake is None:
        try:
            import cmake as cmake_pkg  # the PyPI wheel
            cmake = os.path.join(cmake_pkg.CMAKE_BIN_DIR, "cmake")
        except ImportError:
            missing.append("cmake (pip install cmake)")
    nvcc = shutil.which("nvcc") or next((p for p in ("/usr/local/cuda/bin/nvcc",) if os.path.exists(p)), None)
    if nvcc is None:
        missing.append("nvcc (a CUDA toolkit on PATH)")
    proc = subprocess.run([sys.executable, "-m", "pybind11", "--cmakedir"], capture_output=True, text=True)
    pybind11_dir = proc.stdout.strip() if proc.returncode == 0 else None
    if pybind11_dir is None:
        missing.append("pybind11 (pip install pybind11)")
    if subprocess.run([sys.executable, "-c", "import scipy_openblas32"], capture_output=True).returncode:
        missing.append("scipy-openblas32 (CMakeLists.txt needs it for the CPU module)")
    if missing:
        msg = "direct CMake build impossible, missing: " + ", ".join(missing)
        log.append(msg)
        say(f"[build] {msg}")
        return False
    build = ROOT / "build" / "gpu"
    configure = [cmake, "-S", str(ROOT), "-B", str(build), "-DDTDA_CUDA=ON", "-DCMAKE_BUILD_TYPE=Release",
                 f"-Dpybind11_DIR={pybind11_dir}", f"-DPython_EXECUTABLE={sys.executable}",
                 f"-DCMAKE_CUDA_COMPILER={nvcc}", "-DSKBUILD_PROJECT_VERSION=0.0+gpu-check",
                 f"-DDTDA_CUDA_ARCHITECTURES={env['DTDA_CUDA_ARCHITECTURES']}"]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    if not _attempt("cmake configure (build/gpu)", configure, env, log):
        return False
    targets = ["_C_cuda", "_C"]
    if not _attempt("cmake build", [cmake, "--build", str(build), "--target", *targets, "-j",
                                    str(os.cpu_count() or 4)], env, log):
        return False
    for so in list(build.glob("_C_cuda*.so")) + list(build.glob("_C.*.so")):
        shutil.copy2(so, ROOT / "dtda" / so.name)
        say(f"[build] copied {so.name} into dtda/")
    return True


def build_if_needed(no_build: bool) -> list[str]:
    log: list[str] = []
    ok, info = _cuda_module_imports()
    if ok:
        say(f"[build] {info}")
        return log + [info]
    say(f"[build] dtda._C_cuda does not import: {info}")
    if no_build:
        log.append("--no-build: not building; the cuda backend will be reported unavailable")
        say(f"[build] {log[-1]}")
        return log
    import torch  # only to pick the architecture of this GPU (faster than building three)

    arch = "".join(map(str, torch.cuda.get_device_capability())) if torch.cuda.is_available() else "90"
    env = dict(os.environ, DTDA_CUDA="ON",
               DTDA_CUDA_ARCHITECTURES=os.environ.get("DTDA_CUDA_ARCHITECTURES", arch),
               CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 4))
    say(f"[build] DTDA_CUDA=ON DTDA_CUDA_ARCHITECTURES={env['DTDA_CUDA_ARCHITECTURES']}")
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "-e", "."]
    attempts = [
        ("pip, no build isolation", pip[:4] + ["--no-build-isolation"] + pip[4:]),
        ("pip, build isolation (needs a package index)", pip + ["--retries", "0", "--timeout", "10"]),
    ]
    for what, cmd in attempts:
        if _attempt(what, cmd, env, log):
            ok, info = _cuda_module_imports()
            log.append(info)
            say(f"[build] after {what}: {info}")
            if ok:
                return log
    if _direct_cmake(env, log):
        ok, info = _cuda_module_imports()
        log.append(info)
        say(f"[build] after the direct build: {info}")
    return log


# ---- 2. inputs ------------------------------------------------------------------------------------
# Correctness cases: awkward sizes around the 64-wide tiles, both contraction orders of the ghost
# ops, split reductions, chunk edges and empty inputs.

CASES = {
    "kron_covariance": [dict(N=7, T=5, D=13, mask=None), dict(N=3, T=1, D=70, mask="bool"),
                        dict(N=33, T=4, D=130, mask="float"), dict(N=2, T=700, D=65, mask=None),
                        dict(N=0, T=3, D=5, mask=None)],
    "ghost_dot": [dict(N=5, T=1, I=7, O=9, Q=3), dict(N=6, T=4, I=33, O=17, Q=5), dict(N=3, T=7, I=70, O=65, Q=2),
                  dict(N=130, T=1, I=20, O=30, Q=70), dict(N=4, T=3, I=5, O=6, Q=1), dict(N=9, T=9, I=130, O=3, Q=9)],
    "ghost_pairwise": [dict(Q=3, S=1, N=5, T=1, I=7, O=9), dict(Q=2, S=4, N=6, T=3, I=33, O=17),
                       dict(Q=5, S=2, N=70, T=5, I=12, O=20), dict(Q=2, S=16, N=3, T=16, I=8, O=8),
                       dict(Q=3, S=40, N=5, T=33, I=9, O=17)],
    "ekfac_eigvals": [dict(N=5, T=1, I=7, O=9), dict(N=6, T=4, I=33, O=17), dict(N=3, T=7, I=70, O=65),
                      dict(N=300, T=1, I=20, O=30), dict(N=0, T=3, I=5, O=4)],
    "kron_apply": [dict(Q=3, O=7, I=9), dict(Q=2, O=65, I=33), dict(Q=1, O=1, I=1), dict(Q=4, O=70, I=130)],
    "jl_project": [dict(N=5, P=7, k=3, kind="rademacher"), dict(N=33, P=300, k=130, kind="rademacher"),
                   dict(N=3, P=1000, k=64, kind="gaussian"), dict(N=70, P=129, k=200, kind="gaussian"),
                   dict(N=1, P=5000, k=7, kind="rademacher"), dict(N=0, P=5, k=4, kind="gaussian"),
                   dict(exact=True, P=300, k=64, seed=(1 << 40) + 7)],
    "seed_moments": [dict(K=2, N=3, Q=5), dict(K=7, N=33, Q=10), dict(K=32, N=70, Q=65), dict(K=200, N=3, Q=4),
                     dict(K=5, N=0, Q=3)],
}

# Timing shapes: the (N = 4096, T ∈ {1, 128}, I = O ∈ {256, 1024}, Q = 64, K = 32, and
# benchmarks/ops.py's jl_project), none reduced: the largest is 3.3e12 flops and 4.3 GB of
# float32 inputs (ekfac_eigvals at T = 128, I = O = 1024), a fraction of a second per call.
_GRID = [dict(T=T, W=W) for W in (256, 1024) for T in (1, 128)]
TIME_SHAPES = {
    "kron_covariance": [dict(N=4096, T=s["T"], D=s["W"], mask="bool" if s["T"] > 1 else None) for s in _GRID],
    "ghost_dot": [dict(N=4096, T=s["T"], I=s["W"], O=s["W"], Q=64) for s in _GRID],
    "ghost_pairwise": [dict(Q=64, S=s["T"], N=4096, T=s["T"], I=s["W"], O=s["W"]) for s in _GRID],
    "ekfac_eigvals": [dict(N=4096, T=s["T"], I=s["W"], O=s["W"]) for s in _GRID],
    "kron_apply": [dict(Q=64, O=W, I=W) for W in (256, 1024)],
    "jl_project": [dict(N=4096, P=65536, k=1024, kind=kind) for kind in ("rademacher", "gaussian")],
    "seed_moments": [dict(K=32, N=4096, Q=64)],
}
QUICK_TIME_SHAPES = {op: shapes[:1] for op, shapes in TIME_SHAPES.items()}


def make_args(op: str, p: dict, device, dtype, gen) -> tuple:
    """The op's positional arguments for case/shape ``p`` (floating tensors in ``dtype``)."""
    import torch

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.float32 if dtype.itemsize < 4
                           else dtype).to(dtype)

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device=device)

    def orthogonal(n):
        return torch.linalg.qr(randn(n, n).to(torch.float64 if dtype == torch.float64 else torch.float32))[0].to(dtype)

    if op == "kron_covariance":
        mask = {None: None, "bool": lambda: rand(p["N"], p["T"]) > 0.3,
                "float": lambda: rand(p["N"], p["T"]).to(dtype)}[p["mask"]]
        return randn(p["N"], p["T"], p["D"]), (mask() if mask else None)
    if op == "ghost_dot":
        return randn(p["N"], p["T"], p["I"]), randn(p["N"], p["T"], p["O"]), randn(p["Q"], p["O"], p["I"])
    if op == "ghost_pairwise":
        return (randn(p["Q"], p["S"], p["I"]), randn(p["Q"], p["S"], p["O"]), randn(p["N"], p["T"], p["I"]),
                randn(p["N"], p["T"], p["O"]))
    if op == "ekfac_eigvals":
        return randn(p["N"], p["T"], p["I"]), randn(p["N"], p["T"], p["O"]), orthogonal(p["I"]), orthogonal(p["O"])
    if op == "kron_apply":
        return randn(p["Q"], p["O"], p["I"]), orthogonal(p["I"]), orthogonal(p["O"]), (rand(p["O"], p["I"]) + 0.1).to(dtype)
    if op == "jl_project":
        if p.get("exact"):
            return torch.eye(p["P"], device=device, dtype=dtype), p["k"], p["seed"], "rademacher"
        return randn(p["N"], p["P"]), p["k"], p.get("seed", 1234), p["kind"]
    if op == "seed_moments":
        return randn(p["K"], p["Q"]), randn(p["K"], p["N"], p["Q"])
    raise ValueError(op)


def work(op: str, p: dict) -> tuple[float, float]:
    """(flops, bytes) of one call: flops of the cheapest contraction order (the models of
    benchmarks/ops.py), bytes of float32 inputs read once plus outputs written once."""
    if op == "kron_covariance":
        return 2.0 * p["N"] * p["T"] * p["D"] ** 2, 4.0 * (p["N"] * p["T"] * p["D"] + p["D"] ** 2)
    if op == "ghost_dot":
        N, T, I, O, Q = p["N"], p["T"], p["I"], p["O"], p["Q"]
        return 2.0 * N * I * O * min(T * Q, T + Q), 4.0 * (N * T * (I + O) + Q * O * I + N * Q)
    if op == "ghost_pairwise":
        Q, S, N, T, I, O = p["Q"], p["S"], p["N"], p["T"], p["I"], p["O"]
        flops = min(2.0 * Q * S * N * T * (I + O), 2.0 * O * I * (Q * S + N * T + Q * N))
        return flops, 4.0 * ((Q * S + N * T) * (I + O) + Q * N)
    if op == "ekfac_eigvals":
        N, T, I, O = p["N"], p["T"], p["I"], p["O"]
        per = (I * I + O * O + O * I) if T == 1 else min(T * (I * I + O * O + O * I), T * O * I + O * I * (O + I))
        return 2.0 * N * per, 4.0 * (N * T * (I + O) + I * I + O * O + O * I)
    if op == "kron_apply":
        Q, O, I = p["Q"], p["O"], p["I"]
        return 4.0 * Q * O * I * (O + I), 4.0 * (2 * Q * O * I + I * I + O * O + O * I)
    if op == "jl_project":
        return 2.0 * p["N"] * p["P"] * p["k"], 4.0 * (p["N"] * p["P"] + p["N"] * p["k"])
    if op == "seed_moments":
        return 0.0, 4.0 * (p["K"] * p["N"] * p["Q"] + p["K"] * p["Q"] + 5 * p["N"] * p["Q"])
    raise ValueError(op)


def label(p: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in p.items() if not (k == "mask" and v is None))


# ---- worker: runs tasks, one JSON line per event -------------------------------------------------

def _unavailable(backend: str, op: str, dtype, device: str = "cuda") -> str:
    import torch
    from dtda.ops import registry

    b = registry.backends().get(backend)
    if b is None:
        return f"backend {backend!r} is not registered"
    if op not in b.ops:
        return f"backend {backend!r} does not implement {op}"
    return b.unavailable() or b.supports(torch.device(device), dtype)


def _compare(op: str, got, ref_d, ref64, dtype) -> tuple[bool, float, float, str]:
    import torch
    from dtda.ops.reference import result_dtype

    outs = list(zip(got, ref_d, ref64)) if isinstance(got, tuple) else [(got, ref_d, ref64)]
    worst = (True, 0.0, 0.0, "")  # the passing output closest to its bound
    for i, (g, rd, r64) in enumerate(outs):
        name = f"output {i}"
        if g.shape != r64.shape:
            return False, float("nan"), 0.0, f"{name} shape {tuple(g.shape)} != {tuple(r64.shape)}"
        if g.dtype != result_dtype(dtype):
            return False, float("nan"), 0.0, f"{name} dtype {g.dtype}, expected {result_dtype(dtype)}"
        if r64.numel() == 0:
            continue
        g64, rd64, r64 = g.double(), rd.double(), r64.double()
        bad = ~torch.isfinite(g64) & torch.isfinite(r64)
        if bad.any():
            return False, float("nan"), 0.0, f"{name}: {int(bad.sum())} non-finite elements (unwritten?)"
        scale = max(1.0, r64.abs().max().item())
        bound = C_FACTOR * (rd64 - r64).abs().max().item() + EPS[str(dtype).removeprefix("torch.")] * scale
        err = (g64 - r64).abs().max().item()
        if err > bound:
            return False, err, bound, f"{name} max error {err:.3e} > bound {bound:.3e}"
        if err / bound > (worst[1] / worst[2] if worst[2] else -1.0):
            worst = (True, err, bound, "")
    return worst


def _check(task: dict) -> dict:
    import torch
    import dtda.ops
    from dtda.ops import alloc, reference, registry

    op, backend, dtype = task["op"], task["backend"], getattr(torch, task["dtype"])
    device = task.get("device", "cuda")  # "cpu": tests/test_gpu_check.py runs this pass on CPU backends
    reason = _unavailable(backend, op, dtype, device)
    if reason:
        return dict(status="SKIP", detail=reason)
    gen = torch.Generator().manual_seed(task["index"])
    args64 = make_args(op, task["case"], "cpu", torch.float64, gen)
    args64 = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args64)
    cast = tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args64)
    fn = getattr(dtda.ops, op)
    guarded = tuple(alloc.guarded(a) if isinstance(a, torch.Tensor) else a for a in cast)  # reads past ends -> NaN
    with registry.use_backend(backend), alloc.poisoned():  # writes past ends -> AssertionError
        got = fn(*guarded)
    if device == "cuda":
        torch.cuda.synchronize()
    if registry.last_backend(op) != backend:
        return dict(status="FAIL", detail=f"ran on {registry.last_backend(op)!r}, not {backend!r}")
    if task["case"].get("exact"):  # Rademacher entries bit for bit: Y = I R / √64 = R / 8 exactly
        p = task["case"]
        want = reference.jl_matrix(p["P"], p["k"], p["seed"], "rademacher", dtype=got.dtype, device=got.device) / 8
        mismatches = int((got != want).sum())
        return dict(status="PASS" if mismatches == 0 else "FAIL", err=float(mismatches), bound=0.0,
                    detail=f"{mismatches} entries differ from the reference's R/8")
    with registry.use_backend("reference"):
        ref64, ref_d = fn(*args64), fn(*cast)
    ok, err, bound, detail = _compare(op, tuple(got) if isinstance(got, tuple) else got,
                                      tuple(ref_d) if isinstance(ref_d, tuple) else ref_d,
                                      tuple(ref64) if isinstance(ref64, tuple) else ref64, dtype)
    return dict(status="PASS" if ok else "FAIL", err=err, bound=bound, detail=detail)


def _median_ms(fn, repeats: int) -> float:
    import torch

    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _ceilings() -> dict:
    import torch

    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "tf32": torch.backends.cuda.matmul.allow_tf32}
    n = 8192
    for name, dtype in (("mm_fp32_tflops", torch.float32), ("mm_bf16_tflops", torch.bfloat16)):
        a, b = torch.randn(n, n, device="cuda", dtype=dtype), torch.randn(n, n, device="cuda", dtype=dtype)
        for _ in range(3):
            a @ b
        out[name] = 2.0 * n ** 3 / (_median_ms(lambda: a @ b, 10) * 1e-3) / 1e12
        del a, b
    src = torch.empty(1 << 28, device="cuda", dtype=torch.float32)  # 1 GiB
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    out["copy_gbs"] = 2.0 * src.numel() * 4 / (_median_ms(lambda: dst.copy_(src), 10) * 1e-3) / 1e9
    del src, dst
    torch.cuda.empty_cache()
    return out


def _time(task: dict, deadline: float) -> dict:
    import torch
    import dtda.ops
    from dtda.ops import registry

    op, backend, dtype = task["op"], task["backend"], getattr(torch, task["dtype"])
    reason = _unavailable(backend, op, dtype)
    if reason:
        return dict(status="SKIP", detail=reason)
    if time.time() > deadline:
        return dict(status="SKIP", detail="time budget spent")
    gen = torch.Generator(device="cuda").manual_seed(0)
    torch.cuda.empty_cache()
    try:
        args = make_args(op, task["case"], "cuda", dtype, gen)
        fn = getattr(dtda.ops, op)

        def call():
            with registry.use_backend(backend):
                return fn(*args)

        start = time.time()
        call()  # compiles (Triton) and warms the allocator
        torch.cuda.synchronize()
        first = time.time() - start
        call()
        torch.cuda.synchronize()
        once = (time.time() - start - first)
        if time.time() + once * TIME_REPEATS > deadline:
            return dict(status="SKIP", detail=f"{TIME_REPEATS} calls of {once:.2f} s exceed the time budget")
        ms = _median_ms(call, TIME_REPEATS)
    except torch.cuda.OutOfMemoryError as exc:
        return dict(status="SKIP", detail=f"out of memory: {str(exc).splitlines()[0]}")
    finally:
        args = None
        torch.cuda.empty_cache()
    flops, nbytes = work(op, task["case"])
    return dict(status="TIME", ms=ms, flops=flops, bytes=nbytes)


def worker(tasks_path: str, results_path: str, deadline: float) -> int:
    import torch

    tasks = json.loads(Path(tasks_path).read_text())
    with open(results_path, "a") as results:
        def emit(record: dict) -> None:
            results.write(json.dumps(record) + "\n")
            results.flush()

        for task in tasks:
            emit({"id": task["id"], "event": "start"})
            try:
                if task["kind"] == "ceilings":
                    result = dict(status="INFO", **_ceilings())
                    say("[ceilings] " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                                  for k, v in result.items() if k != "status"))
                elif task["kind"] == "check":
                    result = _check(task)
                else:
                    result = _time(task, deadline)
            except Exception as exc:  # noqa: BLE001  (every failure is reported, none stops the run)
                lines = traceback.format_exception_only(type(exc), exc)
                result = dict(status="FAIL" if task["kind"] == "check" else "ERROR",
                              detail=" ".join(line.strip() for line in lines)[:400])
            emit({"id": task["id"], "event": "done", **result})
            _print_result(task, result)
            try:
                torch.cuda.synchronize()
            except Exception as exc:  # noqa: BLE001  (a sticky error: the context is gone)
                say(f"[worker] CUDA context lost after {task['id']}: {exc}; restarting")
                return 3
    return 0


def _print_result(task: dict, r: dict) -> None:
    if task["kind"] == "ceilings":
        return
    head = f"{r['status']:5} {task['kind']:5} {task['op']:15} {task['backend']:6} {task['dtype']:8} {label(task['case'])}"
    if r["status"] == "TIME":
        say(f"{head}  {r['ms']:.3f} ms")
    elif "err" in r and r["status"] == "PASS":
        say(f"{head}  err={r['err']:.2e} bound={r['bound']:.2e}")
    else:
        say(f"{head}  {r.get('detail', '')}")


# ---- parent: task list, restarts, table ----------------------------------------------------------

def make_tasks(ops: list[str], quick: bool) -> list[dict]:
    tasks = [dict(id="ceilings", kind="ceilings", op="", backend="", dtype="", case={})]
    for op in ops:
        for backend in BACKENDS:
            for dtype in CHECK_DTYPES[backend]:
                for i, case in enumerate(CASES[op]):
                    tasks.append(dict(id=f"check/{op}/{backend}/{dtype}/{i}", kind="check", op=op, backend=backend,
                                      dtype=dtype, case=case, index=i))
    shapes = QUICK_TIME_SHAPES if quick else TIME_SHAPES
    for op in ops:
        for i, shape in enumerate(shapes[op]):
            for dtype in TIME_DTYPES:
                for backend in ("torch", "cuda", "triton"):  # the baseline first
                    tasks.append(dict(id=f"time/{op}/{backend}/{dtype}/{i}", kind="time", op=op, backend=backend,
                                      dtype=dtype, case=shape))
    return tasks


def run_tasks(tasks: list[dict], deadline: float) -> dict[str, dict]:
    """Run ``tasks`` in worker processes, restarting after a task that kills the worker."""
    done: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results_path = os.path.join(tmp, "results.jsonl")
        remaining = list(tasks)
        while remaining:
            tasks_path = os.path.join(tmp, "tasks.json")
            Path(tasks_path).write_text(json.dumps(remaining))
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", tasks_path, results_path,
                                   "--deadline", str(deadline)], cwd=ROOT)
            started = None
            for line in Path(results_path).read_text().splitlines() if os.path.exists(results_path) else []:
                record = json.loads(line)
                if record["event"] == "start":
                    started = record["id"]
                else:
                    done[record["id"]] = record
                    started = None if started == record["id"] else started
            if started is not None and started not in done:
                done[started] = {"id": started, "status": "FAIL" if started.startswith("check") else "ERROR",
                                 "detail": f"the worker died during this task (exit code {proc.returncode})"}
                say(f"FAIL  {started}: {done[started]['detail']}")
            left = [t for t in remaining if t["id"] not in done]
            if proc.returncode == 0 or len(left) == len(remaining):
                for t in left:
                    done[t["id"]] = {"id": t["id"], "status": "ERROR",
                                     "detail": f"not run: the worker exited with code {proc.returncode}"}
                break
            remaining = left
    return done


def summary(tasks: list[dict], done: dict[str, dict], build_log: list[str], args) -> dict:
    by_id = {t["id"]: t for t in tasks}
    ceilings = done.get("ceilings", {})
    say("\n" + "=" * 100)
    say("dtda gpu_check: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in ceilings.items() if k not in ("id", "event", "status")))
    # Correctness counts per (op, backend)
    say("\ncorrectness (PASS/FAIL/SKIP per op and backend; dtypes: cuda and torch fp32/fp64/fp16/bf16, "
        "triton fp32/fp16/bf16)")
    say(f"{'op':16}" + "".join(f"{b:>16}" for b in BACKENDS))
    fails = []
    for op in sorted({t["op"] for t in tasks if t["kind"] == "check"}, key=OPS.index):
        cells = []
        for backend in BACKENDS:
            rs = [done.get(t["id"], {}) for t in tasks if t["kind"] == "check" and t["op"] == op
                  and t["backend"] == backend]
            counts = {s: sum(r.get("status") == s for r in rs) for s in ("PASS", "FAIL", "SKIP")}
            cells.append(f"{counts['PASS']}/{counts['FAIL']}/{counts['SKIP']}")
            fails += [r for r in rs if r.get("status") == "FAIL"]
        say(f"{op:16}" + "".join(f"{c:>16}" for c in cells))
    for r in fails:
        t = by_id[r["id"]]
        say(f"  FAIL {t['op']} {t['backend']} {t['dtype']} {label(t['case'])}: {r.get('detail', '')}")
    # Timings
    mm = {"float32": ceilings.get("mm_fp32_tflops"), "bfloat16": ceilings.get("mm_bf16_tflops")}
    bw = ceilings.get("copy_gbs")
    say("\ntimings: ms (×torch = torch time / this time, >1 is faster; %mm = achieved / torch.mm "
        "TFLOP/s of the dtype; %bw = bytes moved / copy GB/s)")
    say(f"{'op':15} {'shape':34} {'dtype':8} " + " ".join(f"{b:>28}" for b in ("torch", "cuda", "triton")))
    rows = []
    for t in tasks:
        if t["kind"] != "time" or t["backend"] != "torch":
            continue
        cells = []
        base = done.get(t["id"], {})
        for backend in ("torch", "cuda", "triton"):
            r = done.get(t["id"].replace("/torch/", f"/{backend}/"), {})
            if r.get("status") != "TIME":
                cells.append(f"{r.get('status', '-').lower():>28}")
                continue
            s = r["ms"] * 1e-3
            ratio = base["ms"] / r["ms"] if base.get("status") == "TIME" else None
            pmm = 100 * r["flops"] / s / 1e12 / mm[t["dtype"]] if mm.get(t["dtype"]) and r["flops"] else None
            pbw = 100 * r["bytes"] / s / 1e9 / bw if bw else None
            cells.append(f"{r['ms']:9.3f} " + (f"{ratio:5.2f}x " if ratio else "    -  ")
                         + (f"{pmm:5.1f}% " if pmm is not None else "    -  ")
                         + (f"{pbw:5.1f}%" if pbw is not None else "    - "))
            rows.append(dict(op=t["op"], shape=t["case"], dtype=t["dtype"], backend=backend, ms=r["ms"],
                             vs_torch=ratio, pct_matmul=pmm, pct_copy=pbw))
        say(f"{t['op']:15} {label(t['case'])[:34]:34} {t['dtype']:8} " + " ".join(cells))
    skipped = [r for r in done.values() if r.get("id", "").startswith("time") and r.get("status") in ("SKIP", "ERROR")
               and "does not implement" not in r.get("detail", "") and "not registered" not in r.get("detail", "")]
    for r in skipped:
        say(f"  {r['status'].lower()} {r['id']}: {r.get('detail', '')}")
    n_fail = len(fails)
    say(f"\n{'ALL CHECKS PASSED' if n_fail == 0 else f'{n_fail} CHECKS FAILED'}; "
        f"timings for {sum(r['backend'] != 'torch' for r in rows)} non-torch runs")
    return dict(build=build_log, ceilings=ceilings, results=[dict(by_id[k], **v) for k, v in done.items()],
                timings=rows, failures=n_fail, args=vars(args))


def end_to_end_influence(device: str = "cuda") -> dict:
    """``benchmarks/gpu_influence.py``'s check, its failure to run recorded as a failure."""
    from benchmarks.gpu_influence import describe, influence_check

    try:
        result = influence_check(device)
    except Exception as e:  # a crash is a finding to record, not a reason to lose the op table
        result = {"id": "influence/ekfac", "status": "FAIL", "detail": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()}
        say(f"influence (ekfac) on {device}: FAIL {result['detail']}")
        return result
    say(describe(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one timing shape per op")
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated ops (default: all)")
    parser.add_argument("--no-build", action="store_true", help="never try to build dtda._C_cuda")
    parser.add_argument("--time-budget", type=float, default=400.0,
                        help="seconds for checks and timings; timings left when it is spent are skipped")
    parser.add_argument("--no-influence", action="store_true",
                        help="skip the end-to-end EK-FAC influence check (benchmarks/gpu_influence.py)")
    parser.add_argument("--worker", nargs=2, metavar=("TASKS", "RESULTS"), help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.deadline)

    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        parser.error(f"unknown ops {unknown}; ops are {list(OPS)}")
    import torch

    if not torch.cuda.is_available():
        say("gpu_check: no CUDA device visible to torch; nothing to check")
        return 2
    start = time.time()
    build_log = build_if_needed(args.no_build)
    say(f"[build] done in {time.time() - start:.0f} s")
    begin = time.time()
    tasks = make_tasks(ops, args.quick)
    done = run_tasks(tasks, deadline=begin + args.time_budget)
    report = summary(tasks, done, build_log, args)
    if not args.no_influence:
        report["influence"] = end_to_end_influence()
        report["failures"] += report["influence"]["status"] != "PASS"
    say(f"total {time.time() - start:.0f} s")
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu_check.json"
        path.write_text(json.dumps(report, indent=1, default=str))
        say(f"wrote {path}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
