"""dtda.attribute: per-seed removal effects, by unrolled differentiation of the recorded run or by
an influence function at each seed's trained model.

:func:`unroll` (an ensemble -> SeedSamples) and the per-member functions :func:`unroll_member`
and :func:`forward_member` (which also returns the parameter shift Δθ(G)); :func:`influence`
(influence functions per seed, PAPER §4, the same SeedSamples); :func:`diagnose` (unrolling
against influence functions along training, PAPER Fig. 3); :func:`attribute` runs any method by
name (:func:`method_options` lists them).
"""

from dtda.attribute.forward import ForwardResult
from dtda.attribute.influence import influence
from dtda.attribute.unroll import forward_member, unroll, unroll_group, unroll_member
from dtda.attribute import ihvp, source  # noqa: F401  (registers exact, cg, lissa, astra, source)
from dtda.attribute.diagnose import Diagnosis, diagnose
from dtda.attribute.methods import attribute, method_options

__all__ = ["unroll", "unroll_member", "unroll_group", "forward_member", "ForwardResult", "influence", "diagnose",
           "Diagnosis", "attribute", "method_options"]
