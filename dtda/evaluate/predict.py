"""Linearised and non-linear predictions of removing groups, side by side (PAPER §3.1, §7).

For member s and group G, forward-mode unrolled differentiation gives the parameter shift
Δθ_s(G) and δ_s(G) = ∇m(θ_s)ᵀΔθ_s(G). The two predictions of m after removal are

- linearised: m_s + δ_s(G);
- non-linear: m(θ_s + Δθ_s(G)), the measurement re-evaluated at the shifted parameters (exact
  for a measurement that is linear in θ; it keeps the curvature of m along Δθ otherwise).

Both come back as :class:`SeedSamples` (δ [K, G, Q] = prediction − m_s), so every statistic and
:func:`dtda.evaluate.retrained_samples` compare them with retraining the same way.
"""

from __future__ import annotations

import torch

from dtda.attribute import forward_member
from dtda.measure import as_measurement
from dtda.samples import SeedSamples
from dtda.train.ensemble import Ensemble


def predictions(ensemble: Ensemble, measure, groups, chunk_size: int | None = None) -> dict[str, SeedSamples]:
    """{"linear": …, "nonlinear": …}: both predictions for ``groups`` (lists of example indices)
    for every member of ``ensemble``, as SeedSamples with δ [K, G, Q]."""
    measure = as_measurement(measure)
    groups = [[int(i) for i in g] for g in groups]
    ms, linear, nonlinear = [], [], []
    for member in ensemble.members:
        res = forward_member(ensemble.recipe, ensemble.data, member, measure, groups, chunk_size)
        module = ensemble.recipe.build(member.seed)
        buffers = dict(module.named_buffers())
        with torch.no_grad():
            shifted = [measure.functional({k: p + res.dtheta[k][g] for k, p in member.params.items()}, buffers, module)
                       for g in range(len(groups))]
        ms.append(res.m)
        linear.append(res.delta)
        nonlinear.append(torch.stack(shifted) - res.m)
    m = torch.stack(ms)
    names = measure.names_for(m.shape[1])
    meta = {"recipe": ensemble.recipe.describe()}
    return {kind: SeedSamples(m, torch.stack(d), list(ensemble.seeds), names, f"unroll-forward-{kind}", groups,
                              dict(meta))
            for kind, d in (("linear", linear), ("nonlinear", nonlinear))}


__all__ = ["predictions"]
