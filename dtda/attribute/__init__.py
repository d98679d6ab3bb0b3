"""dtda.attribute: per-seed removal effects by unrolled differentiation of the recorded run.

:func:`unroll` (an ensemble -> SeedSamples) and the per-member functions :func:`unroll_member`
and :func:`forward_member` (which also returns the parameter shift Δθ(G)); :func:`influence`
(influence functions per seed, PAPER §4, the same SeedSamples; methods registered by
:mod:`~dtda.attribute.influence`, :mod:`~dtda.attribute.ihvp` and :mod:`~dtda.attribute.source`);
:func:`diagnose` (unrolling against influence functions along the run, PAPER Fig. 3).
"""

from dtda.attribute import ihvp, source  # noqa: F401  (registers exact, cg, lissa, astra, source)
from dtda.attribute.diagnose import Diagnosis, diagnose
from dtda.attribute.forward import ForwardResult
from dtda.attribute.influence import influence
from dtda.attribute.unroll import forward_member, unroll, unroll_member

__all__ = ["unroll", "unroll_member", "forward_member", "ForwardResult", "influence", "diagnose", "Diagnosis"]
