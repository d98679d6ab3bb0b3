"""Unrolled differentiation is exact: finite differences of real retraining, forward = reverse,
the fast routes (mlp, ghost, double-backward) = generic route, and invariance to chunking,
checkpoint spacing and reruns (PAPER §3.5)."""

import pytest
import torch
from torch import nn

import dtda
import dtda.measure as M
import dtda.train as T
from dtda.attribute import forward_member, unroll_member

N = 16


def _data():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(N + 3, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (N + 3,), generator=gen)
    return (X[:N], y[:N]), (X[N:], y[N:])


def _mlp(dropout):
    return lambda: nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(dropout), nn.Linear(6, 3))


CASES = {
    "sgd": dict(optimizer=T.SGD(0.3), schedule="cosine", batch_size=5),  # a short last batch per epoch
    "momentum": dict(optimizer=T.SGD(0.2, momentum=0.9, weight_decay=1e-2), schedule=("step", 8, 0.5)),
    "nesterov": dict(optimizer=T.SGD(0.2, momentum=0.9, nesterov=True, weight_decay=1e-2),
                     schedule=("warmup", 3, "cosine")),
    "adamw-iid": dict(optimizer=T.AdamW(0.05), schedule=("warmup", 3, "linear"), batching="iid",
                      epochs=None, steps=24),
    "dropout": dict(optimizer=T.SGD(0.2, momentum=0.5), schedule=("warmup", 3, "cosine"), dropout=0.3),
}


def _recipe(case, **extra):
    kw = dict(CASES[case])
    kw.update(extra)
    dropout = kw.pop("dropout", 0.0)
    kw.setdefault("epochs", 6)
    kw.setdefault("batch_size", 4)
    return T.Recipe(model=_mlp(dropout), loss="cross_entropy", dtype=torch.float64, **kw)


@pytest.fixture(scope="module")
def runs():
    """Per case: recipe, member, measurement and the reverse-mode δ by both routes."""
    train, (Xq, yq) = _data()
    measure = M.loss(Xq, yq)
    out = {}
    for case in CASES:
        recipe = _recipe(case)
        member = T.train_member(recipe, train, seed=5)
        m, generic = unroll_member(recipe, train, member, measure, route="generic")
        _, ghost = unroll_member(recipe, train, member, measure, route="ghost")
        _, double = unroll_member(recipe, train, member, measure, route="double-backward")
        _, mlp = unroll_member(recipe, train, member, measure, route="mlp")
        out[case] = dict(recipe=recipe, member=member, measure=measure, m=m, generic=generic, ghost=ghost,
                         double=double, mlp=mlp)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_reverse_matches_finite_differences_of_retraining(runs, case):
    r = runs[case]
    train = _data()[0]
    h = 1e-4
    for k in (0, 7, 13):
        w = torch.ones(N, dtype=torch.float64)
        w[k] = 1 + h
        plus = r["measure"](dtda.retrain(r["recipe"], train, [5], weights=w).model(0))
        w[k] = 1 - h
        minus = r["measure"](dtda.retrain(r["recipe"], train, [5], weights=w).model(0))
        fd = (plus - minus) / (2 * h)  # ∂m/∂w_k, and δ(k) = −∂m/∂w_k
        err = (fd + r["generic"][k]).abs().max() / fd.abs().max()
        assert err <= 1e-6, f"{case}, example {k}: relative error {err:.2e}"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("route", ["mlp", "ghost", "double"])
def test_fast_routes_equal_generic_route(runs, case, route):
    r = runs[case]
    torch.testing.assert_close(r[route], r["generic"], rtol=1e-10, atol=1e-13 * r["generic"].abs().max().item())


@pytest.mark.parametrize("case", ["momentum", "adamw-iid", "dropout"])
def test_forward_equals_reverse_and_groups_add(runs, case):
    r = runs[case]
    groups = [[0], [1, 2, 3], [4, 9, 15], list(range(N))]
    fwd = forward_member(r["recipe"], _data()[0], r["member"], r["measure"], groups)
    rev = torch.stack([r["generic"][g].sum(0) for g in groups])
    err = (fwd.delta - rev).abs().max() / rev.abs().max()
    assert err <= 1e-10, f"forward vs reverse: relative error {err:.2e}"
    torch.testing.assert_close(fwd.m, r["m"], rtol=0, atol=0)
    # Δθ(G) is additive and its linearisation reproduces δ(G)
    for name, shift in fwd.dtheta.items():
        assert shift.shape == (len(groups),) + r["member"].params[name].shape
    _, rev_groups = unroll_member(r["recipe"], _data()[0], r["member"], r["measure"], groups=groups, route="generic")
    torch.testing.assert_close(rev_groups, rev, rtol=1e-13, atol=0)


def test_invariance_to_chunking_checkpoints_and_reruns(runs):
    r = runs["nesterov"]
    train = _data()[0]
    _, chunked = unroll_member(r["recipe"], train, r["member"], r["measure"], chunk_size=1, route="ghost")
    torch.testing.assert_close(chunked, r["ghost"], rtol=1e-12, atol=1e-15)
    _, chunked = unroll_member(r["recipe"], train, r["member"], r["measure"], chunk_size=1, route="mlp")
    torch.testing.assert_close(chunked, r["mlp"], rtol=1e-12, atol=1e-15)
    spaced = _recipe("nesterov", checkpoint_every=5)
    member = T.train_member(spaced, train, seed=5)
    for k in member.params:
        assert torch.equal(member.params[k], r["member"].params[k])
    _, delta = unroll_member(spaced, train, member, r["measure"], route="generic")
    torch.testing.assert_close(delta, r["generic"], rtol=1e-12, atol=1e-15)
    _, again = unroll_member(r["recipe"], train, r["member"], r["measure"], route="generic")
    assert torch.equal(again, r["generic"])


def test_unroll_builds_seed_samples():
    train, (Xq, yq) = _data()
    recipe = _recipe("momentum", epochs=2)
    ens = dtda.train_ensemble(recipe, train, seeds=[2, 8])
    measure = M.margin(Xq, yq)
    samples = dtda.unroll(ens, measure)
    assert samples.delta.shape == (2, N, 3) and samples.m.shape == (2, 3)
    assert samples.seeds == [2, 8] and samples.names == measure.names
    assert samples.method == "unroll-reverse" and samples.groups is None
    m1, d1 = unroll_member(recipe, train, ens.member(1), measure)
    assert torch.equal(samples.delta[1], d1) and torch.equal(samples.m[1], m1)
    torch.testing.assert_close(samples.m[1], measure(ens.model(1)), rtol=1e-14, atol=0)
    groups = [[0, 1], [5]]
    fwd = dtda.unroll(ens, measure, mode="forward", groups=groups)
    assert fwd.method == "unroll-forward" and fwd.groups == groups and fwd.delta.shape == (2, 2, 3)
    expected = torch.stack([samples.delta[:, g].sum(1) for g in groups], 1)
    torch.testing.assert_close(fwd.delta, expected, rtol=1e-10, atol=1e-14)
    custom = dtda.unroll(ens, lambda model: model(Xq).sum(1), mode="reverse")
    assert custom.names == ["m[0]", "m[1]", "m[2]"]


def test_bad_arguments():
    train, (Xq, yq) = _data()
    recipe = _recipe("sgd", epochs=1)
    member = T.train_member(recipe, train, seed=0)
    with pytest.raises(ValueError, match="mode"):
        unroll_member(recipe, train, member, M.loss(Xq, yq), mode="sideways")
    with pytest.raises(ValueError, match="needs groups"):
        unroll_member(recipe, train, member, M.loss(Xq, yq), mode="forward")
    with pytest.raises(ValueError, match="groups\\[0\\]"):
        unroll_member(recipe, train, member, M.loss(Xq, yq), groups=[[N]])
    with pytest.raises(ValueError, match="route"):
        unroll_member(recipe, train, member, M.loss(Xq, yq), route="fast")
    conv = T.Recipe(lambda: nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 3)), "cross_entropy",
                    T.SGD(0.1), batch_size=4, epochs=1, dtype=torch.float64)
    with pytest.raises(ValueError, match="nn.Linear"):
        unroll_member(conv, train, T.train_member(conv, train, 0), M.loss(Xq, yq), route="ghost")
