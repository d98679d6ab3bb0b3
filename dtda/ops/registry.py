"""Backend registry: which implementation of an op runs, chosen once per call.

Backends, fastest first where several apply: ``cuda`` (dtda._C_cuda), ``triton``
(dtda.kernels), ``cpp`` (dtda._C), ``torch`` (the best pure-PyTorch formulation) and
``reference`` (the readable oracle). A backend registers one function per op with
:func:`register`, and declares the devices and dtypes it accepts and why it may be unavailable.

Selection: ``DTDA_BACKEND=name`` or ``with dtda.ops.use_backend(name):`` forces one backend and
fails loudly (naming the reason) if it cannot run the call; otherwise the first available
backend in priority order that supports the device and dtype runs. :func:`last_backend` tells
which one ran for each op.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

ALL_FLOATS = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16})

OPS = ("kron_covariance", "ghost_dot", "ghost_pairwise", "ekfac_eigvals", "kron_apply",
       "jl_project", "seed_moments")


@dataclass
class Backend:
    """One implementation family. ``unavailable()`` returns '' when usable, else the reason."""

    name: str
    priority: int  # higher runs first under automatic selection
    devices: frozenset[str]
    dtypes: frozenset[torch.dtype]
    unavailable: Callable[[], str]
    auto: bool = True  # False: only runs when forced (e.g. Triton's CPU interpreter)
    ops: dict[str, Callable] = field(default_factory=dict)
    # op -> fn(*args) returning '' when this backend accepts these arguments, else why not
    # (kernel limits such as a maximum number of seeds).
    limits: dict[str, Callable[..., str]] = field(default_factory=dict)

    def supports(self, device: torch.device, dtype: torch.dtype) -> str:
        """'' if this backend can run on ``device`` with ``dtype``, else why not."""
        if device.type not in self.devices:
            return f"backend {self.name!r} runs on {sorted(self.devices)}, not {device.type}"
        if dtype not in self.dtypes:
            names = sorted(str(d).removeprefix("torch.") for d in self.dtypes)
            return f"backend {self.name!r} supports dtypes {names}, not {str(dtype).removeprefix('torch.')}"
        return ""


_BACKENDS: dict[str, Backend] = {}
_state = threading.local()
_last: dict[str, str] = {}


def add_backend(backend: Backend) -> Backend:
    _BACKENDS[backend.name] = backend
    return backend


def backends() -> dict[str, Backend]:
    """All known backends by name (registration happens in dtda/ops/backends/)."""
    return dict(_BACKENDS)


def register(op: str, backend: str, accepts: Callable[..., str] | None = None) -> Callable[[Callable], Callable]:
    """Decorator: ``fn`` implements ``op`` for ``backend``. ``accepts(*args)`` (optional) returns
    '' when the kernel can take these arguments, else the reason; automatic selection then
    falls through to the next backend and a forced selection raises with that reason."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops are {list(OPS)}")

    def deco(fn: Callable) -> Callable:
        _BACKENDS[backend].ops[op] = fn
        if accepts is not None:
            _BACKENDS[backend].limits[op] = accepts
        return fn

    return deco


def forced() -> str | None:
    """The backend forced by :func:`use_backend` or ``DTDA_BACKEND``, if any."""
    return getattr(_state, "forced", None) or os.environ.get("DTDA_BACKEND") or None


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Force ``name`` for every op inside the block (None restores automatic selection)."""
    if name is not None and name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; backends are {sorted(_BACKENDS)}")
    previous = getattr(_state, "forced", None)
    _state.forced = name
    try:
        yield
    finally:
        _state.forced = previous


def _refusal(backend: Backend, op: str, args: tuple | None) -> str:
    limit = backend.limits.get(op)
    return limit(*args) if limit is not None and args is not None else ""


def candidates(op: str, device: torch.device, dtype: torch.dtype, args: tuple | None = None) -> list[str]:
    """Backends able to run ``op`` here now (on ``args`` when given), in automatic-selection order."""
    ordered = sorted(_BACKENDS.values(), key=lambda b: -b.priority)
    return [b.name for b in ordered
            if op in b.ops and not b.supports(device, dtype) and not b.unavailable()
            and not _refusal(b, op, args)]


def select(op: str, device: torch.device, dtype: torch.dtype, args: tuple | None = None) -> tuple[str, Callable]:
    """The backend that runs ``op`` on this device and dtype (and ``args`` when given),
    honouring a forced choice."""
    name = forced()
    if name is not None:
        backend = _BACKENDS.get(name)
        if backend is None:
            raise RuntimeError(f"DTDA_BACKEND={name!r} is not a backend; backends are {sorted(_BACKENDS)}")
        reason = (backend.unavailable() or backend.supports(device, dtype)
                  or ("" if op in backend.ops else f"backend {name!r} does not implement {op}")
                  or _refusal(backend, op, args))
        if reason:
            raise RuntimeError(f"dtda.ops.{op}: forced backend {name!r} cannot run: {reason}")
        return name, backend.ops[op]
    for name in candidates(op, device, dtype, args):
        if _BACKENDS[name].auto:
            return name, _BACKENDS[name].ops[op]
    raise RuntimeError(f"dtda.ops.{op}: no backend runs on {device.type} with {dtype}")


def dispatch(op: str, *args):
    """Run ``op`` on the selected backend; the first tensor argument fixes device and dtype."""
    first = next(a for a in args if isinstance(a, torch.Tensor))
    name, fn = select(op, first.device, first.dtype, args)
    _last[op] = name
    return fn(*args)


def last_backend(op: str) -> str | None:
    """The backend that ran ``op`` most recently in this process (None if it never ran)."""
    return _last.get(op)
