"""dtda.kernels: Triton kernels of dtda's ops (installed as the ``dtda.kernels`` subpackage).

Modules here import triton; dtda imports them only when triton is usable (a GPU, or
``TRITON_INTERPRET=1`` in tests). Launchers are called from ``dtda/ops/backends/triton.py``.

=========  ==============================================================================
module     kernels
=========  ==============================================================================
tiles      shared block sizes, dot precision (half natively, float32 in IEEE), split sizing
matmul     batched strided products with weight/square prologue and scale epilogue
kron       kron_covariance, kron_apply (on top of matmul)
ghost      ghost_dot (tokens / gram orders), ghost_pairwise (tokens / gradients orders)
ekfac      ekfac_eigvals (rotated factors; rank-1 identity at T = 1)
jl         jl_project with Philox4x32-10 regenerated projection tiles
moments    seed_moments (moments and sorted-sample W2, K ≤ moments.K_MAX)
=========  ==============================================================================
"""
