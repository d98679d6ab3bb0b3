"""Loading the native modules without ever failing at import.

``load_cpu()`` / ``load_cuda()`` return the module or None, and ``why_not(name)`` says why a
module is missing (not built, failed to load, no GPU). With ``DTDA_REQUIRE_NATIVE=1`` a missing
CPU module is an error at first use, so CI never silently tests only the PyTorch fallbacks.
A CPU-only machine never imports ``dtda._C_cuda`` (it would pull in CUDA libraries).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import torch

# dtype codes understood by csrc/common/dtype.h
DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}

_cache: dict[str, ModuleType | None] = {}
_reasons: dict[str, str] = {}


def require_native() -> bool:
    """True when ``DTDA_REQUIRE_NATIVE`` asks for the native CPU module to be present."""
    return os.environ.get("DTDA_REQUIRE_NATIVE", "0") not in ("", "0", "false", "False")


def _import(name: str) -> ModuleType | None:
    if name in _cache:
        return _cache[name]
    module = None
    try:
        if name == "_C":
            # The kernels link libscipy_openblas; importing the wheel's package preloads it
            # (RTLD_GLOBAL) so the loader resolves it for editable and relocated installs too.
            import scipy_openblas32  # noqa: F401
            scipy_openblas32.get_openblas_config()
        module = importlib.import_module(f"dtda.{name}")
    except ImportError as exc:
        _reasons[name] = f"dtda.{name} could not be imported: {exc}"
    _cache[name] = module
    return module


def load_cpu() -> ModuleType | None:
    """The native CPU module ``dtda._C`` or None (reason in :func:`why_not`)."""
    return _import("_C")


def load_cuda() -> ModuleType | None:
    """The native CUDA module ``dtda._C_cuda``, or None when it is absent or no GPU is visible."""
    if "_C_cuda" not in _cache and not torch.cuda.is_available():
        _reasons["_C_cuda"] = "no CUDA device visible to torch"
        return None
    return _import("_C_cuda")


def why_not(name: str) -> str:
    """Why ``dtda.<name>`` is unavailable ('' if it loaded)."""
    return _reasons.get(name, "")


def check_required() -> None:
    """Raise when ``DTDA_REQUIRE_NATIVE=1`` and the CPU module did not load."""
    if require_native() and load_cpu() is None:
        raise RuntimeError(
            "DTDA_REQUIRE_NATIVE=1 but the native CPU module is missing: "
            f"{why_not('_C')}. Reinstall with `pip install -e .` (needs a C++ compiler and CMake).")
