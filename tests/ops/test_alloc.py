"""The test allocator itself: poisoned outputs, guard zones, guarded inputs."""

from __future__ import annotations

import pytest
import torch

from dtda.ops import alloc


def test_poisoned_output_is_nan_with_contiguous_strides():
    with alloc.poisoned():
        out = alloc.empty((3, 5), torch.float32, torch.device("cpu"))
    assert out.isnan().all() and out.is_contiguous()


@pytest.mark.parametrize("where", ["before", "after"])
def test_write_past_an_output_is_reported(where):
    with pytest.raises(AssertionError, match="outside its output of 6 elements"):
        with alloc.poisoned():
            out = alloc.empty((2, 3), torch.float64, torch.device("cpu"))
            offset = out.storage_offset() + (-1 if where == "before" else 6)
            out.as_strided((1,), (1,), offset).fill_(0.0)


def test_outside_poisoned_outputs_are_plain():
    out = alloc.empty((2, 3), torch.float32, torch.device("cpu"))
    assert out.untyped_storage().nbytes() == 6 * 4


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "empty"])
def test_guarded_input_keeps_values_and_strides(layout):
    x = {"contiguous": torch.randn(4, 3), "transposed": torch.randn(3, 4).T, "empty": torch.randn(0, 3)}[layout]
    g = alloc.guarded(x)
    assert torch.equal(g, x) and g.stride() == x.stride()
    if x.numel():
        past_end = g.as_strided((1,), (1,), g.storage_offset() + x.numel())
        assert past_end.isnan().all()  # a kernel reading one element too far gets NaN
