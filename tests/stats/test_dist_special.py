"""Tail probabilities without scipy: closed forms of Student-t for small df, and known values."""

import math

import pytest
import torch

from dtda.stats import betainc, normal_two_sided, student_t_cdf, student_t_two_sided

def f64(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


T = torch.tensor([0.0, 1e-9, 0.1, 0.5, 1.0, 2.0, 3.5, 10.0, 1e3, -2.0], dtype=torch.float64)


def _closed_form(t: torch.Tensor, df: int) -> torch.Tensor:
    """Two-sided p for df = 1, 2, 3, 5 (θ = atan(|t|/√df) for the odd ones)."""
    a = t.abs()
    if df == 2:
        return 1 - a / torch.sqrt(2 + a * a)
    th = torch.atan(a / math.sqrt(df))
    s, c = torch.sin(th), torch.cos(th)
    inner = {1: torch.zeros_like(a), 3: s * c, 5: s * c * (1 + 2 / 3 * c * c)}[df]
    return 1 - 2 / math.pi * (th + inner)


@pytest.mark.parametrize("df", [1, 2, 3, 5])
def test_student_t_matches_closed_forms(df):
    torch.testing.assert_close(student_t_two_sided(T, df), _closed_form(T, df), rtol=1e-12, atol=1e-14)


def test_student_t_known_values():
    assert student_t_two_sided(f64(2.0), 5).item() == pytest.approx(0.10193947882985839, rel=1e-12)
    assert student_t_two_sided(torch.tensor(1.0), 1).item() == pytest.approx(0.5, rel=1e-14)
    # t_{0.975, 15} = 2.131449545559776 (scipy.stats.t.isf(0.025, 15)).
    assert student_t_two_sided(f64(2.131449545559776), 15).item() == pytest.approx(0.05, rel=1e-9)


def test_student_t_large_df_tends_to_normal():
    # |p_t − p_z| ≈ φ(z)(z³ + z)/(2·df) ≤ 1e-4 at df = 1e4.
    z = torch.linspace(-5, 5, 41, dtype=torch.float64)
    torch.testing.assert_close(student_t_two_sided(z, 1e4), normal_two_sided(z), rtol=0, atol=1e-4)


def test_student_t_edges_and_cdf():
    p = student_t_two_sided(torch.tensor([math.inf, -math.inf, 0.0, math.nan]), 4)
    assert p[:3].tolist() == [0.0, 0.0, 1.0] and math.isnan(p[3])
    cdf = student_t_cdf(torch.tensor([-2.0, 0.0, 2.0]), 5)
    torch.testing.assert_close(cdf, torch.tensor([0.10193947882985839 / 2, 0.5, 1 - 0.10193947882985839 / 2],
                                                 dtype=torch.float64), rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="df must be > 0"):
        student_t_two_sided(torch.tensor(1.0), 0)


def test_normal_two_sided():
    assert normal_two_sided(f64(1.959963984540054)).item() == pytest.approx(0.05, rel=1e-12)
    assert normal_two_sided(torch.tensor(0.0)).item() == 1.0
    assert normal_two_sided(torch.tensor(30.0)).item() > 0  # erfc keeps the far tail


def test_betainc_polynomial_case():
    # I_x(2, 3) = Σ_{j=2}^{4} C(4, j) x^j (1 − x)^{4−j}.
    x = torch.linspace(0, 1, 11, dtype=torch.float64)
    expect = sum(math.comb(4, j) * x**j * (1 - x) ** (4 - j) for j in range(2, 5))
    torch.testing.assert_close(betainc(2.0, 3.0, x), expect, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="x must lie in"):
        betainc(1.0, 1.0, torch.tensor(1.5))
