"""SOURCE (PAPER §5): segments and c_ℓ from the recorded run, the c → ∞ limit (the EK-FAC IF at
λ = 0), the query-side recursion against explicit EK-FAC matrices, and the too-few-checkpoints error."""

import math

import pytest
import torch
from torch import nn

import dtda
import dtda.train as T
from dtda.attribute import source
from dtda.curvature import find_layers, kronecker
from dtda.train.ensemble import Ensemble
from dtda.train.record import Member, Record

N, WD = 12, 1e-2


def _recipe(**kw):
    kw.setdefault("optimizer", T.SGD(0.2, momentum=0.5, weight_decay=WD))
    kw.setdefault("epochs", 3)
    return T.Recipe(lambda: nn.Linear(3, 3), "cross_entropy", batch_size=4, dtype=torch.float64, **kw)


def test_segments_split_checkpoints_and_scale_by_momentum():
    recipe = _recipe(schedule="linear", checkpoint_every=2)      # T = 9: checkpoints 0, 2, 4, 6, 8, 9
    member = Member(0, Record([torch.arange(4)] * 9, {t: ({}, {}) for t in (0, 2, 4, 6, 8, 9)}, None, 2))
    segs = source.segments(recipe, member, 3)
    assert [(s.start, s.stop) for s in segs] == [(0, 4), (4, 6), (6, 9)]
    assert segs[1].checkpoints == (4, 6)
    for s in segs:   # c = η̄K/(1 − μ) = Σ_t η_t/(1 − μ)
        assert math.isclose(s.c, sum(recipe.lr(t, 9) for t in range(s.start, s.stop)) / 0.5, rel_tol=1e-12)


def test_too_few_checkpoints_say_which_checkpoint_every(data):
    train, measure = data
    ens = T.train_ensemble(_recipe(), train, seeds=[0])          # T = 9, C = 3: checkpoints 0, 3, 6, 9
    with pytest.raises(ValueError, match=r"5 segments needs at least 6 distinct checkpoints; member 0 has 4 .*"
                                         r"checkpoint_every ≤ 1"):
        dtda.influence(ens, measure, method="source", segments=5)


def test_one_segment_with_infinite_c_is_the_ekfac_influence_at_zero_damping(data):
    """L = 1, every checkpoint equal to θ_T and c = η̄K → ∞: ψ(Λ + λ_wd) = 1/(Λ + λ_wd) (λ_wd > 0),
    so SOURCE is the EK-FAC IF with λ = 0 (a single linear layer, the same sampled Fisher)."""
    train, measure = data
    ens = T.train_ensemble(_recipe(), train, seeds=[0, 1])
    members = [Member(m.seed, Record(m.record.batches, {0: m.record.checkpoints[9], 9: m.record.checkpoints[9]},
                                     None, 9)) for m in ens.members]
    huge = Ensemble(_recipe(optimizer=T.SGD(1e12, weight_decay=WD)), ens.data, members)
    got = dtda.influence(huge, measure, method="source", segments=1)
    want = dtda.influence(huge, measure, method="ekfac", damping=0.0)
    assert got.method == "influence-source" and got.meta["seeds"][0]["segments"][0]["c"] == 9e12
    torch.testing.assert_close(got.delta, want.delta, rtol=1e-10, atol=1e-14)
    # gradients averaged over the segment's two (equal) checkpoints: one term each, the same scores
    each = dtda.influence(huge, measure, method="source", segments=1, average="checkpoints")
    torch.testing.assert_close(each.delta, want.delta, rtol=1e-10, atol=1e-14)


def test_recursion_matches_explicit_ekfac_matrices(data):
    """L = 3 (Fast-SOURCE): δ = (1/N) Σ_ℓ ∇ℓ_kᵀ(θ̄_ℓ) ψ_ℓ(H̄_ℓ) S̄_{ℓ+1}⋯S̄_L ∇m, with every matrix
    function formed densely from the EK-FAC eigenbasis Q_A ⊗ Q_S and eigenvalues Λ + λ_wd."""
    train, measure = data
    recipe = _recipe(checkpoint_every=3)
    ens = T.train_ensemble(recipe, train, seeds=[0])
    got = dtda.influence(ens, measure, method="source", fisher="empirical")
    member, module = ens.members[0], recipe.build(0)
    segs = source.segments(recipe, member, 3)
    thetas = [source.average_weights(member, s.checkpoints) for s in segs]
    layers = find_layers(module)
    curvs = kronecker.fit(module, thetas, {}, ens.data, layers, "empirical", "cross_entropy", [0] * 3, "ekfac",
                          256, loss_fn=recipe.loss_fn, weight_decay=WD)

    def dense(curv, f):
        """The d × d matrix of V ↦ Q_S[f(Λ + λ_wd) ∘ (Q_SᵀVQ_A)]Q_Aᵀ on vec_row(W | b)."""
        e = curv.eigen[0]
        basis = torch.kron(e.QS, e.QA)       # row-major vec: vec(Q_S X Q_Aᵀ) = (Q_S ⊗ Q_A) vec X
        return basis @ torch.diag(f(e.lam + WD).reshape(-1)) @ basis.T

    def flat(p):
        return torch.cat([p["weight"], p["bias"][..., None]], -1).reshape(p["weight"].shape[0], -1)

    jac = torch.func.jacrev(lambda p: measure.functional(p, {}, module))(member.params)
    u = flat(jac).T                          # [d, Q]
    delta = 0
    for ell in reversed(range(3)):
        c = segs[ell].c
        grads = torch.func.vmap(torch.func.grad(
            lambda p, x, y: recipe.loss_fn(torch.func.functional_call(module, p, (x[None],)), y[None])[0]),
            in_dims=(None, 0, 0))(thetas[ell], ens.data.X, ens.data.y)
        delta = delta + flat(grads) @ dense(curvs[ell], source.psi(c)) @ u / N
        u = dense(curvs[ell], lambda lam, c=c: torch.exp(-c * lam)) @ u
    torch.testing.assert_close(got.delta[0], delta, rtol=1e-9, atol=1e-12)
