"""The ``torch`` backend: the best pure-PyTorch formulation of each op.

Unlike the readable reference, these choose the contraction order per call (by T, Q, I, O) and
chunk over examples to bound peak memory. They are the baseline native kernels must beat
(``python -m benchmarks.ops``) and the catch-all where no native kernel applies.
"""

from __future__ import annotations

from dtda.ops import reference
from dtda.ops.registry import ALL_FLOATS, Backend, add_backend, register

BACKEND = add_backend(Backend(
    name="torch", priority=10, devices=frozenset({"cpu", "cuda"}),
    dtypes=ALL_FLOATS, unavailable=lambda: ""))

# ---- kron_covariance / ghost_dot / ghost_pairwise / ekfac_eigvals / kron_apply (helper: linear ops)
# ---- jl_project / seed_moments (helper: stats ops)
