"""The ``reference`` backend: dtda/ops/reference.py itself, on any device and dtype."""

from dtda.ops import reference
from dtda.ops.registry import ALL_FLOATS, OPS, Backend, add_backend

BACKEND = add_backend(Backend(
    name="reference", priority=0, devices=frozenset({"cpu", "cuda", "meta"}),
    dtypes=ALL_FLOATS, unavailable=lambda: ""))

for _op in OPS:
    BACKEND.ops[_op] = getattr(reference, _op)
