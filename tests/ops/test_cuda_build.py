"""The CUDA module as built and installed, checked without a GPU.

When ``dtda._C_cuda`` was built (DTDA_CUDA=ON), its shared library must be where the package
finds it, define every kernel entry point and link the CUDA runtime statically. The file is
inspected, never imported: importing needs the CUDA driver. On a GPU machine the module is also
imported and its attributes checked. Without a build the file checks skip.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import pytest
import torch

from dtda.ops import registry

FUNCTIONS = (
    "kron_covariance", "kron_covariance_workspace", "ghost_dot", "ghost_dot_workspace", "ghost_pairwise",
    "ghost_pairwise_workspace", "ekfac_eigvals", "ekfac_eigvals_workspace", "kron_apply", "jl_project",
    "jl_project_workspace", "seed_moments",
)
ATTRIBUTES = ("archs", "cuda_runtime_version", "JL_RADEMACHER", "JL_GAUSSIAN", "SEED_MOMENTS_MAX_K")


def _library() -> str:
    spec = importlib.util.find_spec("dtda._C_cuda")  # locates the file without loading it
    if spec is None or not spec.origin:
        pytest.skip("dtda._C_cuda was not built (DTDA_CUDA=OFF or no CUDA compiler)")
    return spec.origin


def test_every_op_has_a_cuda_adapter():
    assert set(registry.backends()["cuda"].ops) == set(registry.OPS)


def test_library_defines_every_entry_point():
    data = open(_library(), "rb").read()
    # pybind11 keeps each function's name as a NUL-terminated string in the library.
    missing = [name for name in FUNCTIONS + ATTRIBUTES if name.encode() + b"\0" not in data]
    assert not missing, f"dtda._C_cuda lacks {missing}"


def test_library_exports_its_init_and_links_the_runtime_statically():
    path = _library()
    if shutil.which("readelf") is None:
        pytest.skip("readelf is not installed")
    symbols = subprocess.run(["readelf", "--dyn-syms", "-W", path], capture_output=True, text=True, check=True)
    assert "PyInit__C_cuda" in symbols.stdout
    dynamic = subprocess.run(["readelf", "-d", "-W", path], capture_output=True, text=True, check=True)
    needed = [line for line in dynamic.stdout.splitlines() if "(NEEDED)" in line]
    assert not [line for line in needed if "libcudart" in line], f"cudart linked dynamically: {needed}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_module_imports_on_a_gpu():
    _library()
    from dtda import _native

    module = _native.load_cuda()
    assert module is not None, _native.why_not("_C_cuda")
    assert all(callable(getattr(module, name)) for name in FUNCTIONS)
    assert all(hasattr(module, name) for name in ATTRIBUTES)
