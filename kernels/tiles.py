"""Shared tile helpers of the Triton kernels: block sizes, dot precision, split-K sizing.

Every ``tl.dot`` tile is at least 16 in each dimension (the smallest shape GPUs accept) and
every load and store is masked, so shapes that are not multiples of a block are safe.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

HALF = (torch.float16, torch.bfloat16)
MIN_BLOCK = 16  # tl.dot needs every tile dimension >= 16 on hardware


def block(n: int, largest: int = 64) -> int:
    """The power-of-two tile size for a dimension of ``n``: in [16, largest]."""
    return max(MIN_BLOCK, min(largest, triton.next_power_of_2(max(n, 1))))


def native_dot(*tensors: torch.Tensor) -> bool:
    """True when all operands share one half dtype: tl.dot then runs in it with fp32 accumulation.

    Otherwise (float32 or mixed operands) the kernels upcast to float32 and use IEEE precision,
    never TF32, so float32 results match a float32 reference.
    """
    return tensors[0].dtype in HALF and all(t.dtype == tensors[0].dtype for t in tensors)


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors on ``device``; 1 on CPU (the interpreter gains nothing from splits)."""
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def split_count(tiles: int, steps: int, device: torch.device) -> int:
    """How many independent partial sums to split a reduction of ``steps`` blocks into.

    Enough programs to fill the GPU twice over (``tiles`` output tiles each), at least four
    reduction blocks per split; 1 on CPU.
    """
    want = triton.cdiv(2 * sm_count(device), max(tiles, 1))
    return max(1, min(want, steps // 4))


@triton.jit
def dot(x, y, acc, NATIVE: tl.constexpr):
    """``acc + x @ y``: native half-precision tl.dot when NATIVE, else float32 in IEEE precision."""
    if NATIVE:
        return tl.dot(x, y, acc)
    return tl.dot(x.to(tl.float32), y.to(tl.float32), acc, input_precision="ieee")
