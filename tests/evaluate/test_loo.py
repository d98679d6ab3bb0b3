"""Leave-one-out distributions: predicted against actual as the retrain seeds grow."""

import pytest

from dtda.evaluate import loo


def test_loo_curve_on_smooth_training(linear):
    p = linear
    res = loo(p.samples, p.recipe, p.train, p.measure, examples=[0, 3, 5, 7, 9], mode="masked", bootstrap=100)
    assert sorted(res.curve["mean"]) == [2, 4] and sorted(res.curve) == ["mean", "var_increase"]
    r, lo, hi = res.curve["mean"][4]
    # Masked retraining of a float64 linear regression: LOO means follow δ̄ closely (measured r = 0.99).
    assert r > 0.9 and lo <= hi
    assert res.actual.groups == [[0], [3], [5], [7], [9]] and "S'=4" in str(res)
    with pytest.raises(ValueError, match="at least 3 distinct examples"):
        loo(p.samples, p.recipe, p.train, p.measure, examples=[0, 0, 1])
