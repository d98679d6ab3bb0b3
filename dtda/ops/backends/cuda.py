"""The ``cuda`` backend: adapters from CUDA tensors to the kernels of ``dtda._C_cuda``.

Adapters pass pointers, sizes, dtype codes and ``torch.cuda.current_stream().cuda_stream``;
outputs and workspaces are allocated by torch (its caching allocator).
"""

from __future__ import annotations

from dtda import _native
from dtda.ops.registry import ALL_FLOATS, Backend, add_backend, register


def _unavailable() -> str:
    return "" if _native.load_cuda() is not None else _native.why_not("_C_cuda")


BACKEND = add_backend(Backend(
    name="cuda", priority=40, devices=frozenset({"cuda"}),
    dtypes=ALL_FLOATS, unavailable=_unavailable))
