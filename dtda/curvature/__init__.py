"""dtda.curvature: curvature of trained models for influence functions (PAPER §6).

Knows modules and tensors, never seeds, files, members or recipes:

- :mod:`~dtda.curvature.capture`: the covered layers (``nn.Linear``, ``nn.Conv2d``) and the capture
  of their factors a [B, T, I(+1)], g [B, T, O] for a batch.
- :mod:`~dtda.curvature.fisher`: pseudo-gradients ("true": sampled targets; "empirical": true
  labels) and the diagonal Fisher.
- :mod:`~dtda.curvature.kronecker`: K-FAC / EK-FAC factors, float64 eigendecompositions batched
  over layers and seeds, preconditioning with ``dtda.ops.kron_apply``.
"""

from dtda.curvature.capture import Captured, Layer, capture, find_layers, scores
from dtda.curvature.kronecker import KroneckerCurvature, fit

__all__ = ["Layer", "Captured", "capture", "find_layers", "scores", "KroneckerCurvature", "fit"]
