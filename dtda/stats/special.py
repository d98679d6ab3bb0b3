"""Tail probabilities for the z and t tests, in torch (no scipy).

- :func:`normal_two_sided` ``p = 2(1 − Φ(|z|)) = erfc(|z|/√2)``.
- :func:`student_t_two_sided` ``p = P(|T_ν| ≥ |t|) = I_{ν/(ν+t²)}(ν/2, 1/2)``, with the regularised
  incomplete beta function I evaluated by its continued fraction (modified Lentz).
- :func:`betainc` ``I_x(a, b)``.

All run elementwise and broadcast; they compute in float64 and return float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_EPS = 1e-15  # relative convergence of the continued fraction (float64 resolution)
_TINY = 1e-300  # Lentz's guard against division by zero
_MAX_TERMS = 10_000


def normal_two_sided(z: Tensor) -> Tensor:
    """Two-sided normal p-value ``2(1 − Φ(|z|))``, computed as ``erfc(|z|/√2)`` (no cancellation)."""
    z = torch.as_tensor(z, dtype=torch.float64)
    return torch.special.erfc(z.abs() / math.sqrt(2.0))


def student_t_two_sided(t: Tensor, df: float | Tensor) -> Tensor:
    """Two-sided Student-t p-value ``P(|T_df| ≥ |t|) = I_{df/(df+t²)}(df/2, 1/2)``; df > 0.

    ``t = ±inf`` gives 0 and ``t = 0`` gives 1; NaN stays NaN.
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    df = torch.as_tensor(df, dtype=torch.float64, device=t.device)
    if bool((df <= 0).any()):
        raise ValueError(f"student_t_two_sided: df must be > 0, got {df.tolist()}")
    t2 = t.square()
    # x = df/(df+t²) and 1 − x = t²/(df+t²), both formed directly: 1 − x would cancel for small t.
    x = torch.where(torch.isinf(t2), torch.zeros_like(t2), df / (df + t2))
    y = torch.where(torch.isinf(t2), torch.ones_like(t2), t2 / (df + t2))
    return _betainc(df / 2, torch.full_like(df, 0.5), x, y)


def student_t_cdf(t: Tensor, df: float | Tensor) -> Tensor:
    """Student-t CDF ``P(T_df ≤ t)`` from the two-sided tail: ``1 − p/2`` for t ≥ 0, ``p/2`` below."""
    t = torch.as_tensor(t, dtype=torch.float64)
    half_tail = student_t_two_sided(t, df) / 2
    return torch.where(t >= 0, 1 - half_tail, half_tail)


def betainc(a: Tensor | float, b: Tensor | float, x: Tensor | float) -> Tensor:
    """Regularised incomplete beta ``I_x(a, b) = B(x; a, b)/B(a, b)`` for a, b > 0 and x ∈ [0, 1]."""
    x = torch.as_tensor(x, dtype=torch.float64)
    a = torch.as_tensor(a, dtype=torch.float64, device=x.device)
    b = torch.as_tensor(b, dtype=torch.float64, device=x.device)
    if bool(((x < 0) | (x > 1)).any()):
        raise ValueError("betainc: x must lie in [0, 1]")
    if bool(((a <= 0) | (b <= 0)).any()):
        raise ValueError("betainc: a and b must be > 0")
    return _betainc(a, b, x, 1 - x)


def _betainc(a: Tensor, b: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """``I_x(a, b)`` given x and y = 1 − x (both exact). Uses the continued fraction where it
    converges fast, x < (a+1)/(a+b+2), and the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) elsewhere."""
    a, b, x, y = torch.broadcast_tensors(a, b, x, y)
    swap = x >= (a + 1) / (a + b + 2)
    aa, bb = torch.where(swap, b, a), torch.where(swap, a, b)
    xx, yy = torch.where(swap, y, x), torch.where(swap, x, y)
    # log x = log1p(−y) keeps precision when x is near 1 (large df, small t).
    log_x = torch.where(xx > 0.5, torch.log1p(-yy), torch.log(xx))
    log_y = torch.where(yy > 0.5, torch.log1p(-xx), torch.log(yy))
    log_front = (aa * log_x + bb * log_y
                 + torch.lgamma(aa + bb) - torch.lgamma(aa) - torch.lgamma(bb))
    value = torch.exp(log_front) / aa * _continued_fraction(aa, bb, xx)
    return torch.where(swap, 1 - value, value)


def _continued_fraction(a: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """``1/g`` with ``g = 1 + d₁/(1 + d₂/(1 + …))``, d_{2j+1} = −(a+j)(a+b+j)x/((a+2j)(a+2j+1)) and
    d_{2j} = j(b−j)x/((a+2j−1)(a+2j)); g by the modified Lentz method, elementwise."""
    tiny = torch.full_like(x, _TINY)

    def guard(v: Tensor) -> Tensor:
        return torch.where(v.abs() < _TINY, tiny, v)

    g, c, d = torch.ones_like(x), torch.ones_like(x), torch.zeros_like(x)
    done = torch.zeros_like(x, dtype=torch.bool)
    for i in range(1, _MAX_TERMS):
        j = i // 2
        if i % 2:
            coef = -(a + j) * (a + b + j) * x / ((a + 2 * j) * (a + 2 * j + 1))
        else:
            coef = j * (b - j) * x / ((a + 2 * j - 1) * (a + 2 * j))
        d = 1 / guard(1 + coef * d)
        c = guard(1 + coef / c)
        step = c * d
        g = torch.where(done, g, g * step)
        done = done | ((step - 1).abs() < _EPS) | torch.isnan(step)
        if bool(done.all()):
            return 1 / g
    raise RuntimeError(f"betainc: continued fraction did not converge in {_MAX_TERMS} terms")
