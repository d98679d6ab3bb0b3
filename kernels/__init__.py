"""dtda.kernels: Triton kernels of dtda's ops (installed as the ``dtda.kernels`` subpackage).

Modules here import triton; dtda imports them only when triton is usable (a GPU, or
``TRITON_INTERPRET=1`` in tests). Launchers are called from ``dtda/ops/backends/triton.py``.
"""
