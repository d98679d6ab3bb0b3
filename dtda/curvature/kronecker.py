"""K-FAC and EK-FAC curvature of covered layers (PAPER §6.1), fitted for K seeds together.

Per layer l, with the factors a [B, T, I(+1)] and pseudo-gradients g̃ [B, T, O] of
:mod:`dtda.curvature.fisher` over the N training examples:

- A = (1/(N·T)) Σ_{n,t} ā_nt ā_ntᵀ (mean over positions) and S = (1/N) Σ_{n,t} g̃_nt g̃_ntᵀ (sum over
  positions), both with ``ops.kron_covariance``, so A ⊗ S ≈ F_l = (1/N) Σ_n vec G̃_n vec G̃_nᵀ
  (positions taken as independent; for T = 1 A ⊗ S is the usual K-FAC with A, S per example).
- Float64 eigendecompositions A = Q_A diag(d_A) Q_Aᵀ, S = Q_S diag(d_S) Q_Sᵀ, one batched
  ``torch.linalg.eigh`` per matrix size over all layers and all seeds.
- Eigenvalues Λ [O, I(+1)]: K-FAC Λ = d_S d_Aᵀ; EK-FAC Λ = (1/N) Σ_n (Q_Sᵀ G̃_n Q_A)^∘2
  (``ops.ekfac_eigvals``, a second pass over the data with the same sampled targets).
- Preconditioning in each layer's eigenbasis with ``ops.kron_apply``. The curvature of
  J = (1/N)Σℓ_n + ½λ_wd‖θ‖² is H ≈ F + λ_wd I, whose eigenvalues are Λ + λ_wd: :meth:`apply`
  hands fn those, so ``solve(V, λ)`` = (H + λI)⁻¹V = Q_S [(Q_SᵀVQ_A) ⊘ (Λ + λ_wd + λ)] Q_Aᵀ.

Each batch's sums run in the factors' own dtype (float32 for a float32 model: a batch's sum is
short, and a float64 copy of every batch's a and g doubled the covariance and Λ passes' time and
memory) and are added into float64 totals; eigendecompositions are in float64, preconditioning
in V's dtype (at least float32); results come back in the dtype of V.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

import dtda.ops as ops
from dtda.curvature.capture import Captured, Layer, Params
from dtda.curvature.fisher import check_fisher, grouped_passes

KINDS = ("kfac", "ekfac")


@dataclass
class LayerEigen:
    """One layer's eigenbases (float64) Q_A [I, I], Q_S [O, O] and eigenvalues Λ of F, [O, I]."""

    QA: Tensor
    QS: Tensor
    lam: Tensor


@dataclass
class KroneckerCurvature:
    """One seed's K-FAC / EK-FAC curvature H ≈ F + λ_wd I over ``layers``."""

    kind: str
    layers: list[Layer]
    eigen: list[LayerEigen]
    weight_decay: float

    def eigenvalues(self) -> dict[str, Tensor]:
        """Λ of F (without λ_wd) per layer name, [O, I(+1)] float64."""
        return {layer.name: e.lam for layer, e in zip(self.layers, self.eigen)}

    def apply(self, V: Params, fn: Callable[[Tensor], Tensor] | dict[str, Callable[[Tensor], Tensor]]) -> Params:
        """Q_S [fn(Λ + λ_wd) ∘ (Q_Sᵀ V_q Q_A)] Q_Aᵀ per layer, for V: name -> [Q, *shape]
        (the covered parameters). fn maps eigenvalues of H [O, I] to a scale [O, I]; a dict
        gives one fn per layer name. Returns name -> [Q, *shape] in V's dtype.

        The rotations run in V's dtype (float32 for a float32 model, as Kronfluence preconditions:
        4·Q·O·I·(O + I) FLOPs, half the time of float64); the scale is computed from the float64 Λ
        and then cast."""
        out: Params = {}
        for layer, e in zip(self.layers, self.eigen):
            f = fn[layer.name] if isinstance(fn, dict) else fn
            M = layer.matrix(V)
            dtype = torch.promote_types(M.dtype, torch.float32)
            scale = f(e.lam + self.weight_decay).to(torch.float64).to(dtype)
            P = ops.kron_apply(M.to(dtype).contiguous(), e.QA.to(dtype), e.QS.to(dtype), scale.contiguous())
            out.update({k: v.to(M.dtype) for k, v in layer.split(P).items()})
        return out

    def solve(self, V: Params, damping: float | dict[str, float]) -> Params:
        """(H + λI)⁻¹V: scale 1/(Λ + λ_wd + λ); ``damping`` a float or one λ per layer name."""
        if isinstance(damping, dict):
            return self.apply(V, {name: (lambda lam, d=d: 1.0 / (lam + d)) for name, d in damping.items()})
        return self.apply(V, lambda lam: 1.0 / (lam + damping))


def _eigh_batched(mats: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
    """(eigenvalues, eigenvectors) of symmetric float64 matrices, one ``eigh`` per size."""
    out: list = [None] * len(mats)
    sizes: dict[int, list[int]] = {}
    for i, m in enumerate(mats):
        sizes.setdefault(m.shape[0], []).append(i)
    for idx in sizes.values():
        stack = torch.stack([mats[i] for i in idx])
        vals, vecs = torch.linalg.eigh(0.5 * (stack + stack.transpose(1, 2)))
        for j, i in enumerate(idx):
            out[i] = (vals[j].clamp_min(0.0), vecs[j].contiguous())
    return out


def _add64(total: Tensor | None, batch: Tensor) -> Tensor:
    """``total + batch`` in float64 (``batch`` as the op returned it)."""
    batch = batch.to(torch.float64)
    return batch if total is None else total.add_(batch)


def fit(module: nn.Module, params_list: list[Params], buffers: dict, data, layers: list[Layer],
        fisher: str, loss_name: str | None, seeds: list[int], kind: str, batch_size: int, *,
        loss_fn: Callable | None = None, weight_decay: float = 0.0) -> list[KroneckerCurvature]:
    """K-FAC or EK-FAC curvature for each parameter set in ``params_list`` (K seeds of one
    architecture ``module``), fitted together: each pass over the data (covariances, then for
    EK-FAC the eigenvalues) captures the K sets as one vmapped computation
    (:func:`dtda.curvature.fisher.grouped_passes`: as many sets per pass as memory allows), and one
    batched float64 eigendecomposition per matrix size covers all layers and sets. Equal to fitting
    each set alone up to rounding.

    data: anything with ``.X`` [N, ...] and ``.y`` [N, ...] (the training data, true labels).
    fisher: "true" or "empirical"; loss_name: "cross_entropy", "mse" or None (custom loss);
    loss_fn: the per-example loss ``(outputs, y) -> [B]`` (needed for fisher="empirical").
    seeds: one generator seed per parameter set (the "true" Fisher's sampling).
    kind: "kfac" or "ekfac". weight_decay: λ_wd, part of H (see :meth:`KroneckerCurvature.apply`).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    check_fisher(fisher, loss_name)
    if fisher == "empirical" and loss_fn is None:
        raise ValueError("fisher='empirical' needs loss_fn, the per-example loss (outputs, y) -> [B]")
    if len(seeds) != len(params_list):
        raise ValueError(f"seeds must give one generator seed per parameter set: {len(params_list)} "
                         f"parameter sets, got {len(seeds)} seeds")
    X, y = data.X, data.y
    N, K, L = X.shape[0], len(params_list), len(layers)

    def passes() -> Iterator[tuple[range, slice, list[Captured]]]:
        return grouped_passes(module, params_list, buffers, layers, X, y, fisher, loss_fn, loss_name, seeds,
                              batch_size)

    A = [[None] * L for _ in range(K)]
    S = [[None] * L for _ in range(K)]
    positions = [0] * L  # Σ_batches B·T per layer: the same for every set (one architecture)
    for chunk, _, caps in passes():
        for s, cap in zip(chunk, caps):
            for i, (a, g) in enumerate(zip(cap.a, cap.g)):
                A[s][i] = _add64(A[s][i], ops.kron_covariance(a))
                S[s][i] = _add64(S[s][i], ops.kron_covariance(g))
                if s == 0:
                    positions[i] += a.shape[0] * a.shape[1]
        del caps, cap, a, g  # this batch's factors go before the next batch is captured (peak memory)
    decomposed = _eigh_batched([m for s in range(K) for i in range(L)
                                for m in (A[s][i] / positions[i], S[s][i] / N)])
    del A, S
    eigen = []
    for s in range(K):
        pairs = decomposed[2 * s * L:2 * (s + 1) * L]  # (A, S) of each layer of set s
        eigen.append([LayerEigen(QA, QS, torch.outer(dS, dA)) for (dA, QA), (dS, QS) in zip(pairs[0::2], pairs[1::2])])
    if kind == "ekfac":
        lam = [[torch.zeros_like(e.lam) for e in per_set] for per_set in eigen]
        bases: dict[tuple[int, int, torch.dtype], tuple[Tensor, Tensor]] = {}  # eigenbases in the factors' dtype
        for chunk, _, caps in passes():
            for s, cap in zip(chunk, caps):
                for i, (a, g) in enumerate(zip(cap.a, cap.g)):
                    if (s, i, a.dtype) not in bases:
                        bases[s, i, a.dtype] = eigen[s][i].QA.to(a.dtype), eigen[s][i].QS.to(a.dtype)
                    QA, QS = bases[s, i, a.dtype]
                    lam[s][i] += ops.ekfac_eigvals(a, g, QA, QS)
            del caps, cap, a, g
        for per_set, totals in zip(eigen, lam):
            for e, total in zip(per_set, totals):
                e.lam = total / N
    return [KroneckerCurvature(kind, layers, per_set, float(weight_decay)) for per_set in eigen]
