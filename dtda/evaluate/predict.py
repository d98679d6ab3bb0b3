"""Linearised, non-linear and second-order predictions of removing groups, side by side
(PAPER §3.1, §7).

For member s and group G, the weights move along w(ε) = 1 − ε𝟙_G (ε = 1 removes G, masked).
Forward-mode unrolled differentiation gives the parameter shift Δθ_s(G) = dθ_T/dε and
δ_s(G) = dm/dε = ∇m(θ_s)ᵀΔθ_s(G); forward over forward also gives δ²_s(G) = d²m/dε² (the
second-order tangent of the whole training trajectory, :mod:`dtda.attribute.forward`). The
predictions of m after removal are

- linearised: m_s + δ_s(G) (what every other part of dtda uses: reverse mode gives it for all N
  examples at once, and groups sum the singles);
- non-linear: m(θ_s + Δθ_s(G)), the measurement re-evaluated at the shifted parameters (exact
  for a measurement that is linear in θ; it keeps the curvature of m along Δθ, not that of the
  trajectory);
- second-order: m_s + δ_s(G) + ½δ²_s(G), the Taylor series of m(θ_T(ε)) to ε² at ε = 1. It adds
  the curvature of training in the weights (the interaction of the removed examples with each
  other, and with the parameter shift they cause) and of m. Exact when m(ε) is a quadratic (a
  linear model trained two steps); one forward-over-forward sweep per member, 6–10× the
  cost of the first-order one.

Each comes back as :class:`SeedSamples` (δ [K, G, Q] = prediction − m_s), so every statistic and
:func:`dtda.evaluate.retrained_samples` compare them with retraining the same way.
"""

from __future__ import annotations

import torch

from dtda.attribute import forward_member
from dtda.measure import as_measurement
from dtda.samples import SeedSamples
from dtda.train.ensemble import Ensemble

#: The prediction kinds :func:`predictions` returns, in order.
KINDS = ("linear", "nonlinear", "second_order")


def predictions(ensemble: Ensemble, measure, groups, chunk_size: int | None = None,
                second_order: bool = True) -> dict[str, SeedSamples]:
    """{"linear": …, "nonlinear": …, "second_order": …}: the predictions for ``groups`` (lists
    of example indices) for every member of ``ensemble``, as SeedSamples with δ [K, G, Q].
    ``second_order=False`` leaves the second-order one out (and its 6–10× cost)."""
    measure = as_measurement(measure)
    groups = [[int(i) for i in g] for g in groups]
    ms, deltas = [], {kind: [] for kind in KINDS[:3 if second_order else 2]}
    for member in ensemble.members:
        res = forward_member(ensemble.recipe, ensemble.data, member, measure, groups, chunk_size,
                             order=2 if second_order else 1)
        module = ensemble.recipe.build(member.seed)
        buffers = dict(module.named_buffers())
        with torch.no_grad():
            shifted = [measure.functional({k: p + res.dtheta[k][g] for k, p in member.params.items()}, buffers, module)
                       for g in range(len(groups))]
        ms.append(res.m)
        deltas["linear"].append(res.delta)
        deltas["nonlinear"].append(torch.stack(shifted) - res.m)
        if second_order:
            deltas["second_order"].append(res.delta + 0.5 * res.delta2)
    m = torch.stack(ms)
    names = measure.names_for(m.shape[1])
    meta = {"recipe": ensemble.recipe.describe()}
    return {kind: SeedSamples(m, torch.stack(d), list(ensemble.seeds), names, f"unroll-forward-{kind}", groups,
                              dict(meta))
            for kind, d in deltas.items()}


__all__ = ["predictions", "KINDS"]
