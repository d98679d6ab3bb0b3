"""Automatic selection on the CPU: which backend runs each op for each dtype, and why."""

from __future__ import annotations

import pytest
import torch

from dtda.ops import registry

CPP = registry.backends()["cpp"]


@pytest.mark.skipif(bool(CPP.unavailable()), reason=CPP.unavailable() or "")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", registry.OPS)
def test_cpu_picks_the_cpp_kernel_in_every_dtype(op, dtype):
    # Half inputs are upcast to float32 (the result dtype) and run by the C++ kernel: faster than
    # the torch backend, which upcasts the same way (docs/ops.md, "Selection").
    assert registry.select(op, torch.device("cpu"), dtype)[0] == "cpp"
