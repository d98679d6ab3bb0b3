"""The anchor adapters of ``benchmarks/anchors.py`` compute dtda's maths (skipped where not installed)."""

import pytest
import torch

import dtda.ops
from benchmarks import anchors
from benchmarks.ops import SPECS

CASES = [(op, name) for op, adapters in anchors.ADAPTERS.items() for name in adapters]


@pytest.mark.parametrize(("op", "anchor"), CASES, ids=[f"{op}-{name}" for op, name in CASES])
def test_adapter_matches_dtda(op, anchor):
    why = anchors.unavailable(anchor)
    if why:
        pytest.skip(why)
    for shape in SPECS[op].quick:
        args = SPECS[op].make(shape)
        out = anchors.make(op, anchor, *args)()
        if op in anchors.VALUES_DIFFER:  # another random matrix: shape and scale only
            assert anchors.jl_check(args[0], out, args[1]) == ""
            continue
        with dtda.ops.use_backend("reference"):
            ref = getattr(dtda.ops, op)(*(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point()
                                          else a for a in args))
        # float32 sums in another order: the measured worst case is 7e-7 of the largest entry.
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


def test_jl_check_catches_wrong_scale_and_shape():
    x = torch.randn(128, 2048)
    y = dtda.ops.jl_project(x, 256, 7)
    assert anchors.jl_check(x, y, 256) == ""
    assert "JL check failed" in anchors.jl_check(x, y * 16, 256)  # R without the 1/√k
    assert "JL check failed" in anchors.jl_check(x, torch.randn(128, 256), 256)  # not a projection of x
    assert "shape" in anchors.jl_check(x, y[:, :128], 256)


def test_missing_anchor_says_why(monkeypatch):
    monkeypatch.setitem(anchors.ANCHORS, "absent", ("absent-dist", "dtda_no_such_module"))
    assert "absent-dist not usable (ModuleNotFoundError" in anchors.unavailable("absent")
