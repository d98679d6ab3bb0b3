"""The ``cpp`` backend: adapters from tensors to the torch-free kernels of ``dtda._C``.

Each adapter makes its inputs contiguous, allocates the output with torch, poisons nothing
(the kernels write every element) and passes pointers, sizes, the dtype code and torch's
thread count to the native kernel.
"""

from __future__ import annotations

from dtda import _native
from dtda.ops.registry import NATIVE_CPU_FLOATS, Backend, add_backend, register


def _unavailable() -> str:
    return "" if _native.load_cpu() is not None else _native.why_not("_C")


BACKEND = add_backend(Backend(
    name="cpp", priority=20, devices=frozenset({"cpu"}),
    dtypes=NATIVE_CPU_FLOATS, unavailable=_unavailable))
