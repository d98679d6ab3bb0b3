"""Every Triton kernel compiles for sm_80 and sm_90, with the specialisations the ops launch.

The interpreter (TRITON_INTERPRET=1) runs the kernels' Python on NumPy and never compiles them:
type errors, operations or tile shapes the hardware rejects, and register or shared-memory
overflow would first show up on a GPU. Here the launches of representative op calls (every
kernel, every constexpr flag, float32/float16/bfloat16, block sizes up to the largest) are
recorded under the interpreter, then compiled to cubins by Triton's own compiler in a
subprocess without the interpreter (tests/ops/triton_compile.py; no GPU or driver needed).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import dtda.ops
from dtda.ops import registry

TRITON = registry.backends()["triton"]
pytestmark = [pytest.mark.triton,
              pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" or bool(TRITON.unavailable()),
                                 reason=TRITON.unavailable() or "records launches under TRITON_INTERPRET=1")]
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
WORKERS = 2
POINTER_TYPES = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16",
                 torch.float64: "*fp64", torch.int64: "*i64", torch.int32: "*i32", torch.bool: "*i1"}


def _scalar_type(value) -> str:
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64" if value < 2**63 else "u64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for {value!r}")


def _spec(fn, args: tuple, kwargs: dict) -> dict:
    """The compile specialisation of one launch: argument types, constexpr values, options."""
    params = inspect.signature(fn).parameters
    bound = dict(zip(params, args)) | {k: v for k, v in kwargs.items() if k in params}
    signature, constexprs = {}, {}
    for name, param in params.items():
        value = bound[name]
        if "constexpr" in str(param.annotation):
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = POINTER_TYPES[value.dtype]
        else:
            signature[name] = _scalar_type(value)
    options = {k: v for k, v in kwargs.items() if k not in params}
    return dict(module=fn.__module__, kernel=fn.__name__, signature=signature, constexprs=constexprs,
                options=options)


def _representative_calls(dtype: torch.dtype) -> None:
    """Op calls reaching every kernel and constexpr flag, with tiles up to the largest block."""
    def r(*shape):  # small values: float16 products of these sizes stay finite
        return (0.1 * torch.randn(*shape)).to(dtype)

    def q(n):
        return torch.linalg.qr(torch.randn(n, n))[0].to(dtype)

    ops = dtda.ops
    for mask in (None, torch.rand(3, 2) > 0.5, torch.rand(3, 2).to(dtype)):
        ops.kron_covariance(r(3, 2, 70), mask)
    ops.ghost_dot(r(70, 1, 40), r(70, 1, 70), r(3, 70, 40))     # tokens order
    ops.ghost_dot(r(2, 40, 70), r(2, 40, 65), r(40, 65, 70))    # gram order
    ops.ghost_pairwise(r(3, 1, 70), r(3, 1, 40), r(70, 1, 70), r(70, 1, 40))
    ops.ghost_pairwise(r(2, 40, 20), r(2, 40, 17), r(3, 40, 20), r(3, 40, 17))
    ops.ekfac_eigvals(r(5, 1, 70), r(5, 1, 65), q(70), q(65))
    ops.ekfac_eigvals(r(3, 40, 20), r(3, 40, 70), q(20), q(70))
    ops.kron_apply(r(2, 65, 70), q(70), q(65), torch.rand(65, 70).to(dtype))
    for kind in ("rademacher", "gaussian"):
        ops.jl_project(r(70, 100), 130, 2**40 + 7, kind)
    ops.seed_moments(r(7, 5), r(7, 70, 5))


def _launchable_kernels() -> set[tuple[str, str]]:
    """(module, name) of every kernel dtda.kernels launches (``name[grid](...)`` in its module)."""
    import importlib
    import pkgutil

    import dtda.kernels
    from triton.runtime.interpreter import InterpretedFunction

    found = set()
    for info in pkgutil.iter_modules(dtda.kernels.__path__):
        module = importlib.import_module(f"dtda.kernels.{info.name}")
        source = inspect.getsource(module)
        found |= {(module.__name__, name) for name, obj in vars(module).items()
                  if isinstance(obj, InterpretedFunction) and f"{name}[" in source}
    return found


def _record_launches() -> list[dict]:
    from triton.runtime import interpreter

    specs: dict[str, dict] = {}
    original = interpreter.InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        spec = _spec(self.fn, args, kwargs)
        specs.setdefault(json.dumps(spec, sort_keys=True), spec)
        return original(self, *args, grid=grid, warmup=warmup, **kwargs)

    interpreter.InterpretedFunction.run = recording_run
    try:
        # Only the launches matter here, not the values (the interpreter's bfloat16 tl.dot is
        # wrong and overflows: see harness.dtypes_for).
        with registry.use_backend("triton"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for dtype in DTYPES:
                _representative_calls(dtype)
    finally:
        interpreter.InterpretedFunction.run = original
    return list(specs.values())


def test_every_kernel_compiles_for_sm80_and_sm90(tmp_path: Path):
    specs = _record_launches()
    missing = _launchable_kernels() - {(s["module"], s["kernel"]) for s in specs}
    assert not missing, f"kernels no representative call launches: {sorted(missing)}"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")  # compile for real, never from an earlier run's cache
    workers = []
    for w in range(WORKERS):  # compiling is CPU-bound and independent per spec
        path = tmp_path / f"specs{w}.json"
        path.write_text(json.dumps(specs[w::WORKERS]))
        workers.append(subprocess.Popen([sys.executable, str(Path(__file__).with_name("triton_compile.py")), str(path)],
                                        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    failures, compiled = [], 0
    for w, proc in enumerate(workers):
        out, err = proc.communicate(timeout=900)
        results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert proc.returncode == 0, err[-3000:]
        compiled += len(results)
        for r in results:
            spec = specs[w::WORKERS][r["spec"]]
            if not r["ok"]:
                failures.append((spec["kernel"], r["target"], spec["signature"], spec["constexprs"], r["error"]))
    assert not failures, "\n".join(map(str, failures))
    assert compiled == 2 * len(specs)
