"""Inverse curvature-vector products (H + λI)⁻¹v for Q right-hand sides at once (PAPER §6.2, §6.3).

Plain functions on matrix-vector callables over flat directions [Q, d]; they know nothing of
models (:class:`dtda.curvature.products.Products` supplies the callables):

- :func:`exact`: the explicit symmetric matrix, float64 eigendecomposition; λ = 0 is the
  pseudo-inverse (eigenvalues ≤ ``PINV_RTOL``·max|eigenvalue| count as zero).
- :func:`cg`: conjugate gradients on full-data products + λI, optionally preconditioned.
- :func:`lissa`: the Neumann series x_{j+1} = v + (I − α(H̃_j + λI))x_j with minibatch products
  H̃_j (indices drawn with replacement from a seeded generator), which converges to
  (1/α)(H + λI)⁻¹v: the result is α·x_J (averaged over R independent repeats).
- :func:`astra`: preconditioned SGD with heavy-ball momentum on ½xᵀ(H + λI)x − vᵀx,
  x_{j+1} = x_j − α_j·b_j, b_j = μ b_{j−1} + P̃⁻¹[(H̃_j + λI)x_j − v], x_0 = P̃⁻¹v, where
  P̃⁻¹ is e.g. the EK-FAC solve (P + λ̃I)⁻¹.

Every solver returns a :class:`Solution` with the iterations run and the final relative residual
‖(H + λI)x − v‖/‖v‖ per right-hand side (on the full-data product when one is given), and
raises :class:`DivergenceError` naming the solver, iteration and residual when an iterate goes
non-finite or its residual grows by ``DIVERGENCE`` over the first one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

Matvec = Callable[[Tensor], Tensor]                      # [Q, d] -> [Q, d]
MinibatchMatvec = Callable[[Tensor, Tensor], Tensor]     # (indices [b], [Q, d]) -> [Q, d]

#: Eigenvalues at most this fraction of the largest |eigenvalue| are the null space (float64).
PINV_RTOL = 1e-10
#: A relative residual this many times above max(1, the first one) means divergence.
DIVERGENCE = 1e4


class DivergenceError(FloatingPointError):
    """An iterative solver diverged (its message names the solver, iteration and residual)."""


@dataclass
class Solution:
    """x [Q, d] ≈ (H + λI)⁻¹v, the iterations run and the final relative residual per column."""

    x: Tensor
    iterations: int
    residuals: list[float]

    def meta(self) -> dict:
        """JSON-able summary: iterations, the largest residual and all of them."""
        return {"iterations": self.iterations, "residual": max(self.residuals, default=0.0),
                "residuals": self.residuals}


def _relative(r: Tensor, v_norm: Tensor) -> Tensor:
    """‖r_q‖/‖v_q‖ per column (0 where v_q = 0 and r_q = 0)."""
    return r.norm(dim=1) / v_norm.clamp_min(torch.finfo(r.dtype).tiny)


def residuals(matvec: Matvec, x: Tensor, v: Tensor, damping: float) -> list[float]:
    """‖(H + λI)x − v‖/‖v‖ per column, with H x = matvec(x)."""
    r = matvec(x).to(v.dtype) + damping * x.to(v.dtype) - v
    return [float(e) for e in _relative(r, v.norm(dim=1))]


class _Monitor:
    """Raises :class:`DivergenceError` for a non-finite or exploding relative residual."""

    def __init__(self, solver: str, hint: str):
        self.solver, self.hint, self.first = solver, hint, None

    def __call__(self, iteration: int, rel: Tensor, x: Tensor) -> None:
        worst = float(rel.max()) if rel.numel() else 0.0
        if self.first is None:
            self.first = worst if math.isfinite(worst) else 1.0
        if not math.isfinite(worst) or not bool(torch.isfinite(x).all()) or \
                worst > DIVERGENCE * max(1.0, self.first):
            raise DivergenceError(
                f"{self.solver} diverged at iteration {iteration}: relative residual "
                f"‖(H + λI)x − v‖/‖v‖ = {worst:.3e} (first {self.first:.3e}); {self.hint}")


def explicit_inverse(matrix: Tensor, damping: float) -> tuple[Tensor, Tensor, Tensor]:
    """(eigenvalues e, eigenvectors Q, scale f) of a symmetric matrix in float64, with
    f = 1/(e + λ) where |e + λ| > ``PINV_RTOL``·max|e + λ| and 0 elsewhere, so that
    Q diag(f) Qᵀ = (H + λI)⁻¹, or its pseudo-inverse when singular."""
    H = matrix.to(torch.float64)
    e, Q = torch.linalg.eigh(0.5 * (H + H.T))
    shifted = e + damping
    cutoff = PINV_RTOL * float(shifted.abs().max()) if shifted.numel() else 0.0
    keep = shifted.abs() > cutoff
    scale = torch.where(keep, 1.0 / torch.where(keep, shifted, torch.ones_like(shifted)),
                        torch.zeros_like(shifted))
    return e, Q, scale


def exact(matrix: Tensor, v: Tensor, damping: float) -> Solution:
    """(H + λI)⁻¹v from the explicit matrix H [d, d] (float64); λ = 0: the pseudo-inverse.
    v [Q, d]. The residual is that of the float64 solve (nonzero for the pseudo-inverse when v
    has a part in the null space)."""
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != v.shape[1]:
        raise ValueError(f"exact: matrix must be [d, d] and v [Q, d], got {tuple(matrix.shape)} and "
                         f"{tuple(v.shape)}")
    _, Q, scale = explicit_inverse(matrix, damping)
    v64 = v.to(torch.float64)
    x = ((v64 @ Q) * scale) @ Q.T
    H = matrix.to(torch.float64)
    return Solution(x, 0, residuals(lambda z: z @ H, x, v64, damping))


def cg(matvec: Matvec, v: Tensor, damping: float, *, max_iter: int = 200, tol: float = 1e-8,
       precondition: Matvec | None = None) -> Solution:
    """Preconditioned conjugate gradients on (H + λI)x = v, each column on its own; stops when
    every column's recurrence residual is ≤ ``tol``·‖v‖ or after ``max_iter`` iterations.
    precondition: M ≈ (H + λI)⁻¹ as a callable on [Q, d] (symmetric positive definite).
    Raises :class:`DivergenceError` if the operator is not positive definite along a search
    direction (an indefinite Hessian, or λ = 0 on a singular H with v outside its range)."""
    monitor = _Monitor("cg", "use curvature='ggn' or more damping")
    v_norm = v.norm(dim=1)
    x = torch.zeros_like(v)
    r = v.clone()

    def apply_m(res: Tensor) -> Tensor:
        return res if precondition is None else precondition(res).to(res.dtype)

    z = apply_m(r)
    p = z.clone()
    rz = (r * z).sum(1)
    iterations = 0
    for j in range(max_iter):
        active = _relative(r, v_norm) > tol
        if not bool(active.any()):
            break
        Ap = matvec(p).to(v.dtype) + damping * p
        pAp = (p * Ap).sum(1)
        if bool((active & ~(pAp > 0)).any()):
            q = int((active & ~(pAp > 0)).nonzero()[0])
            raise DivergenceError(
                f"cg diverged at iteration {j + 1}: pᵀ(H + λI)p = {float(pAp[q]):.3e} ≤ 0 for right-hand "
                f"side {q} (relative residual {float(_relative(r, v_norm)[q]):.3e}): the operator is not "
                "positive definite; use curvature='ggn' or more damping")
        alpha = torch.where(active, rz / torch.where(active, pAp, torch.ones_like(pAp)), torch.zeros_like(pAp))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * Ap
        iterations = j + 1
        monitor(iterations, _relative(r, v_norm), x)
        z = apply_m(r)
        rz_new = (r * z).sum(1)
        beta = torch.where(active, rz_new / torch.where(active, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta[:, None] * p
        rz = torch.where(active, rz_new, rz)
    return Solution(x, iterations, residuals(matvec, x, v, damping))


def _sampler(n: int, batch_size: int, seed: int) -> Callable[[], Tensor]:
    """Draws of min(batch_size, n) indices in [0, n), with replacement, from a seeded generator."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    size = min(batch_size, n)
    return lambda: torch.randint(n, (size,), generator=gen)


def power_iteration(matvec: Matvec, d: int, dtype: torch.dtype, iterations: int = 20, seed: int = 0,
                    device: torch.device | str = "cpu") -> float:
    """An estimate of the largest eigenvalue of the symmetric operator (|Rayleigh quotient|)."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    x = torch.randn(1, d, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    estimate = 0.0
    for _ in range(iterations):
        x = x / x.norm().clamp_min(torch.finfo(dtype).tiny)
        y = matvec(x).to(dtype)
        estimate = float((x * y).sum().abs())
        x = y
    return estimate


def _check_positive(solver: str, **values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                or not math.isfinite(value):
            raise ValueError(f"{solver}: {name} must be a finite number > 0, got {value!r}")


def _check_count(solver: str, **values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{solver}: {name} must be a positive int, got {value!r}")


def lissa(minibatch_matvec: MinibatchMatvec, n: int, v: Tensor, damping: float, *, alpha: float,
          iterations: int = 1000, repeats: int = 1, batch_size: int = 256, seed: int = 0,
          full_matvec: Matvec | None = None) -> Solution:
    """LiSSA (Neumann form): x_0 = v, x_{j+1} = v + (I − α(H̃_j + λI))x_j, H̃_j the product on
    a fresh minibatch of min(batch_size, n) indices drawn with replacement; returns α·x_J, which
    tends to (H + λI)⁻¹v (the series converges to (1/α)(H + λI)⁻¹v), averaged over ``repeats``
    independent runs. Stable for α < 2/(λ_max + λ); a truncated series adds ≈ 1/(αJ) damping.
    The divergence check uses the minibatch residual x_j − x_{j+1} = (H̃_j + λI)(αx_j) − v; the
    final residual is on ``full_matvec`` when given, else on the last minibatch."""
    _check_positive("lissa", alpha=alpha)
    _check_count("lissa", iterations=iterations, repeats=repeats, batch_size=batch_size)
    draw = _sampler(n, batch_size, seed)
    monitor = _Monitor("lissa", f"lower alpha (now {alpha:g}; stable below 2/(λ_max + λ))")
    v_norm = v.norm(dim=1)
    total = torch.zeros_like(v)
    last_idx = None
    for rep in range(repeats):
        x = v.clone()
        for j in range(iterations):
            last_idx = draw()
            step = v - alpha * (minibatch_matvec(last_idx, x).to(v.dtype) + damping * x)
            monitor(rep * iterations + j + 1, _relative(step, v_norm), x)
            x = x + step
        total = total + alpha * x
    x = total / repeats
    final = full_matvec if full_matvec is not None else (lambda z: minibatch_matvec(last_idx, z))
    return Solution(x, iterations * repeats, residuals(final, x, v, damping))


def astra(minibatch_matvec: MinibatchMatvec, n: int, v: Tensor, damping: float,
          precondition: Matvec, *, iterations: int = 200, lr: float | None = None, momentum: float = 0.9,
          lr_decay: float = 0.5, decay_every: int = 50, batch_size: int = 256, seed: int = 0,
          full_matvec: Matvec | None = None) -> Solution:
    """ASTRA (PAPER §6.3): preconditioned SGD with heavy-ball momentum μ,

        x_0 = P̃⁻¹v,  b_j = μ b_{j−1} + P̃⁻¹[(H̃_j + λI)x_j − v],  x_{j+1} = x_j − α_j b_j,

    P̃⁻¹ = ``precondition`` (e.g. the EK-FAC solve (P + λ̃I)⁻¹), H̃_j a minibatch product on
    min(batch_size, n) indices drawn with replacement, α_j = lr·lr_decay^⌊j/decay_every⌋ with
    lr = 0.1λ by default (ASTRA's settings: 200 iterations, batch 256, μ = 0.9, ×0.5 every 50)."""
    if lr is None:
        if not damping > 0:
            raise ValueError(f"astra: the default step size lr = 0.1·λ needs damping λ > 0, got λ = {damping!r}; "
                             "pass lr= or a positive damping")
        lr = 0.1 * damping
    _check_positive("astra", lr=lr, lr_decay=lr_decay)
    _check_count("astra", iterations=iterations, decay_every=decay_every, batch_size=batch_size)
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise ValueError(f"astra: momentum must be in [0, 1), got {momentum!r}")
    draw = _sampler(n, batch_size, seed)
    monitor = _Monitor("astra", f"lower lr (now {lr:g}) or check the preconditioner")
    v_norm = v.norm(dim=1)
    x = precondition(v).to(v.dtype)
    buf = torch.zeros_like(v)
    last_idx = None
    for j in range(iterations):
        last_idx = draw()
        r = minibatch_matvec(last_idx, x).to(v.dtype) + damping * x - v
        monitor(j, _relative(r, v_norm), x)
        buf = momentum * buf + precondition(r).to(v.dtype)
        x = x - lr * lr_decay ** (j // decay_every) * buf
    final = full_matvec if full_matvec is not None else (lambda z: minibatch_matvec(last_idx, z))
    return Solution(x, iterations, residuals(final, x, v, damping))
