"""Zero-size extents, every op on every available implementation (STYLE.md habit 7).

Each case sets one extent to 0: either the output is empty, or a reduction runs over nothing
and every output element must be written as 0 (outputs are NaN-poisoned, so an unwritten one
fails). The reference gives the expected shapes and values. :data:`CASES` is shared with
test_cuda_emulated.py, which runs the CUDA sources on the host emulation.
"""

from __future__ import annotations

import pytest
import torch
from harness import assert_close_to_reference, implementations, skip_unless_tiny

from dtda.ops import SeedMoments


def _orthogonal(n: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))[0].float() if n else torch.empty(0, 0)


def _kron_covariance(N, T, D, mask):
    masks = {"none": None, "bool": torch.rand(N, T) > 0.4, "weights": torch.randn(N, T)}
    return torch.randn(N, T, D), masks[mask]


def _ghost_dot(N, T, I, O, Q):
    return torch.randn(N, T, I), torch.randn(N, T, O), torch.randn(Q, O, I)


def _ghost_pairwise(Q, S, N, T, I, O):
    return torch.randn(Q, S, I), torch.randn(Q, S, O), torch.randn(N, T, I), torch.randn(N, T, O)


def _ekfac_eigvals(N, T, I, O):
    return torch.randn(N, T, I), torch.randn(N, T, O), _orthogonal(I), _orthogonal(O)


def _kron_apply(Q, O, I):
    return torch.randn(Q, O, I), _orthogonal(I), _orthogonal(O), torch.rand(O, I)


def _jl_project(N, P, kind):
    return torch.randn(N, P), 5, 3, kind


def _seed_moments(K, N, Q):
    return torch.randn(K, Q), torch.randn(K, N, Q)


# (op, id, argument maker): every extent of every op at 0 once.
CASES = [
    *[("kron_covariance", f"{dims},{mask}", lambda d=d, m=mask: _kron_covariance(*d, m))
      for dims, d in (("N=0", (0, 3, 4)), ("T=0", (4, 0, 3)), ("D=0", (4, 1, 0)))
      for mask in ("none", "bool", "weights")],
    *[("ghost_dot", dims, lambda d=d: _ghost_dot(*d))
      for dims, d in (("N=0", (0, 2, 3, 4, 2)), ("T=0", (3, 0, 3, 4, 2)), ("I=0", (3, 2, 0, 4, 2)),
                      ("O=0", (3, 2, 3, 0, 2)), ("Q=0", (3, 2, 3, 4, 0)))],
    *[("ghost_pairwise", dims, lambda d=d: _ghost_pairwise(*d))
      for dims, d in (("Q=0", (0, 2, 3, 2, 4, 3)), ("S=0", (2, 0, 3, 2, 4, 3)), ("N=0", (2, 2, 0, 2, 4, 3)),
                      ("T=0", (2, 2, 3, 0, 4, 3)), ("I=0", (2, 2, 3, 2, 0, 3)), ("O=0", (2, 2, 3, 2, 4, 0)))],
    *[("ekfac_eigvals", dims, lambda d=d: _ekfac_eigvals(*d))
      for dims, d in (("N=0,T=1", (0, 1, 3, 4)), ("N=0,T=2", (0, 2, 3, 4)), ("T=0", (3, 0, 3, 4)),
                      ("I=0", (3, 2, 0, 4)), ("O=0", (3, 2, 3, 0)))],
    *[("kron_apply", dims, lambda d=d: _kron_apply(*d))
      for dims, d in (("Q=0", (0, 3, 4)), ("O=0", (2, 0, 4)), ("I=0", (2, 3, 0)))],
    *[("jl_project", f"{dims},{kind}", lambda d=d, kind=kind: _jl_project(*d, kind))
      for dims, d in (("N=0", (0, 7)), ("P=0", (3, 0))) for kind in ("rademacher", "gaussian")],
    *[("seed_moments", dims, lambda d=d: _seed_moments(*d))
      for dims, d in (("N=0", (4, 0, 3)), ("Q=0", (4, 3, 0)))],
]


def params(cases=CASES):
    return [pytest.param(op, make, id=f"{op},{name}") for op, name, make in cases]


def _implementations():
    ops = sorted({op for op, _, _ in CASES})
    return {op: implementations(op) for op in ops}


_IMPLS = _implementations()


@pytest.mark.parametrize("op,make", params())
@pytest.mark.parametrize("backend", ["cpp", "torch", "reference", "triton"])
def test_zero_size(op, make, backend):
    impl = next((p for p in _IMPLS[op] if p.id == backend), None)
    if impl is None or any(m.name == "skip" for m in impl.marks):
        pytest.skip(f"{backend} does not run {op} here")
    args = make()
    skip_unless_tiny(backend, *[s for a in args if isinstance(a, torch.Tensor) for s in a.shape])
    fields = SeedMoments._fields if op == "seed_moments" else None
    dtypes = [torch.float32] if backend == "triton" else [torch.float32, torch.float64]
    for dtype in dtypes:
        assert_close_to_reference(op, backend, args, dtype, fields=fields)
