"""The implementations of dtda's ops, one module per backend; importing registers them.

=========  ========  ===================================================================
backend    priority  runs
=========  ========  ===================================================================
cuda       40        dtda._C_cuda on CUDA tensors
triton     30        dtda.kernels on CUDA tensors (on CPU only when forced, under
                     TRITON_INTERPRET=1)
cpp        20        dtda._C on CPU float32/float64 tensors
torch      10        the best pure-PyTorch formulation, any device and dtype
reference  0         the readable oracle of dtda/ops/reference.py
=========  ========  ===================================================================
"""

from dtda.ops.backends import cpp, cuda, reference, torch_fast, triton  # noqa: F401
