"""Packaging and dispatch: import never fails for want of native code, selection is explicit."""

import importlib.metadata
import os
import subprocess
import sys

import pytest
import torch

import dtda
from dtda import _native
from dtda.ops import registry


def test_native_cpu_module_loaded_when_required():
    if _native.require_native():
        assert _native.load_cpu() is not None, _native.why_not("_C")


def test_kernels_ship_as_subpackage_without_top_level_module():
    import dtda.kernels  # noqa: F401  (importable from the install, editable or not)

    files = [str(f) for f in importlib.metadata.distribution("dtda").files or []]
    assert not any(f.startswith("kernels/") or f == "kernels.py" for f in files), files


def test_import_survives_missing_native_module():
    # A fresh interpreter where dtda._C cannot be imported: dtda and its reference ops work.
    code = (
        "import sys; sys.modules['dtda._C'] = None\n"
        "import torch, dtda\n"
        "from dtda import _native\n"
        "assert _native.load_cpu() is None and 'dtda._C' in _native.why_not('_C')\n"
        "print(dtda.ops.ghost_dot(torch.ones(2,3), torch.ones(2,4), torch.ones(1,4,3)).tolist())\n"
        "print(dtda.ops.last_backend('ghost_dot'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DTDA_REQUIRE_NATIVE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split("\n")[0] == "[[12.0], [12.0]]"
    assert out.stdout.split("\n")[1] != "cpp"


def test_forced_backend_fails_loudly_when_it_cannot_run():
    x = torch.ones(2, 3)
    with registry.use_backend("cuda"), pytest.raises(RuntimeError, match="forced backend 'cuda'"):
        dtda.ops.kron_covariance(x)
    with pytest.raises(ValueError, match="unknown backend"):
        with registry.use_backend("nope"):
            pass


def test_environment_variable_forces_backend(monkeypatch):
    monkeypatch.setenv("DTDA_BACKEND", "reference")
    dtda.ops.kron_covariance(torch.ones(2, 3))
    assert dtda.ops.last_backend("kron_covariance") == "reference"


def test_automatic_selection_records_what_ran():
    dtda.ops.kron_covariance(torch.ones(2, 3, dtype=torch.float64))
    expected = registry.candidates("kron_covariance", torch.device("cpu"), torch.float64)
    auto = [n for n in expected if registry.backends()[n].auto]
    assert dtda.ops.last_backend("kron_covariance") == auto[0]


def test_info_command_lists_every_op():
    out = subprocess.run([sys.executable, "-m", "dtda", "info"], capture_output=True, text=True, check=True)
    for op in registry.OPS:
        assert op in out.stdout
    assert "dtda._C" in out.stdout and "triton" in out.stdout


def test_kernel_limits_steer_automatic_selection_and_refuse_forced_runs():
    # A fake top-priority backend whose kernel refuses more than 3 seeds.
    registry.add_backend(registry.Backend(
        name="limited", priority=99, devices=frozenset({"cpu"}), dtypes=frozenset({torch.float64}),
        unavailable=lambda: ""))
    try:
        registry.register("seed_moments", "limited", accepts=lambda m, d: "" if m.shape[0] <= 3 else "K > 3")(
            lambda m, d: dtda.ops.reference.seed_moments(m, d))
        small, large = torch.randn(3, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
        dtda.ops.seed_moments(small, torch.randn(3, 4, 2, dtype=torch.float64))
        assert dtda.ops.last_backend("seed_moments") == "limited"
        dtda.ops.seed_moments(large, torch.randn(5, 4, 2, dtype=torch.float64))
        assert dtda.ops.last_backend("seed_moments") not in ("limited", None)
        with registry.use_backend("limited"), pytest.raises(RuntimeError, match="K > 3"):
            dtda.ops.seed_moments(large, torch.randn(5, 4, 2, dtype=torch.float64))
    finally:
        registry._BACKENDS.pop("limited")
