"""dtda.attribute: per-seed removal effects by unrolled differentiation of the recorded run.

:func:`unroll` (an ensemble -> SeedSamples) and the per-member functions :func:`unroll_member`
and :func:`forward_member` (which also returns the parameter shift Δθ(G)).
"""

from dtda.attribute.forward import ForwardResult
from dtda.attribute.unroll import forward_member, unroll, unroll_group, unroll_member

__all__ = ["unroll", "unroll_member", "unroll_group", "forward_member", "ForwardResult"]
