"""Groups of seeds in lockstep: equal to one-at-a-time training and unrolling (float64, 1e-10),
bit-identical reruns and replays for a group, resume of a partly stored group, fallbacks."""

import warnings

import pytest
import torch
from torch import nn

import dtda
import dtda.measure as M
import dtda.train as T
from dtda.attribute import unroll_group, unroll_member
from dtda.train import lockstep
from dtda.train.record import member_path

SEEDS = [3, 7, 8]


def _data(n=14):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def _recipe(optimizer, **kw):
    base = dict(model=lambda: nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 3)),
                loss="cross_entropy", optimizer=optimizer, batch_size=4, epochs=3, dtype=torch.float64,
                checkpoint_every=3, schedule=("warmup", 2, "cosine"))
    base.update(kw)
    return T.Recipe(**base)


OPTIMIZERS = {"momentum-decay": T.SGD(0.2, momentum=0.9, weight_decay=0.05),
              "nesterov": T.SGD(0.1, momentum=0.8, nesterov=True),
              "adamw": T.AdamW(0.05, weight_decay=0.1)}


def _close(a: dict, b: dict) -> float:
    """Largest relative difference between two (nested) dicts of tensors."""
    worst = 0.0
    for k, v in a.items():
        if isinstance(v, dict):
            worst = max(worst, _close(v, b[k]))
        else:
            worst = max(worst, ((v - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-300)).item())
    return worst


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_group_equals_one_at_a_time_in_float64(name):
    X, y = _data()
    recipe = _recipe(OPTIMIZERS[name])
    grouped = T.train_group(recipe, (X, y), SEEDS)
    alone = [T.train_member(recipe, (X, y), s) for s in SEEDS]
    for g, a in zip(grouped, alone):
        assert g.record.group == tuple(SEEDS) and a.record.group is None
        assert [b.tolist() for b in g.record.batches] == [b.tolist() for b in a.record.batches]
        assert sorted(g.record.checkpoints) == sorted(a.record.checkpoints)
        for t, (p, s) in a.record.checkpoints.items():
            assert _close(g.record.checkpoints[t][0], p) <= 1e-10 and _close(g.record.checkpoints[t][1], s) <= 1e-10
    measure = M.margin(X[:2], y[:2])
    for (m_g, d_g), member in zip(unroll_group(recipe, (X, y), grouped, measure), alone):
        m_a, d_a = unroll_member(recipe, (X, y), member, measure)
        torch.testing.assert_close(m_g, m_a, rtol=1e-10, atol=0)
        torch.testing.assert_close(d_g, d_a, rtol=1e-10, atol=1e-10 * d_a.abs().max().item())
        assert d_a.abs().max() > 0


@pytest.mark.parametrize("route", ["ghost", "double-backward", "generic"])
def test_every_route_sweeps_each_member_with_its_own_model(route):
    """A group's sweep on every reverse route equals the mlp route's (float64): each member's
    step runs its own module (the ghost route hooks that member's Linear layers; hooking the
    first member's once gave every other slot wrong δ)."""
    X, y = _data()
    recipe = _recipe(OPTIMIZERS["momentum-decay"])
    grouped = T.train_group(recipe, (X, y), SEEDS)
    measure = M.margin(X[:2], y[:2])
    for (m_r, d_r), (m_f, d_f) in zip(unroll_group(recipe, (X, y), grouped, measure, route=route),
                                      unroll_group(recipe, (X, y), grouped, measure, route="mlp")):
        torch.testing.assert_close(m_r, m_f, rtol=1e-10, atol=0)
        torch.testing.assert_close(d_r, d_f, rtol=1e-10, atol=1e-10 * d_f.abs().max().item())


def test_group_reruns_and_replays_are_bit_identical():
    X, y = _data()
    recipe = _recipe(OPTIMIZERS["adamw"])
    first, second = T.train_group(recipe, (X, y), SEEDS), T.train_group(recipe, (X, y), SEEDS)
    for a, b in zip(first, second):
        for t, (p, _) in a.record.checkpoints.items():
            assert all(torch.equal(p[k], b.record.checkpoints[t][0][k]) for k in p)
    # member 7 alone (stand-ins in the other slots) replays its training bit for bit
    data = T.as_data((X, y), torch.float64)
    replayer = lockstep.Replayer(recipe, data, [None, first[1], None])
    states = replayer.segment(3, 6)  # s_3, s_4, s_5, from the checkpoint at 3
    idx = replayer.batch(5)
    params, state, _ = replayer.group_step(*states[-1][:2], data.X[idx], data.y[idx],
                                           torch.ones(idx.shape, dtype=X.dtype), 5)
    stored_params, stored_state = first[1].record.checkpoints[6]
    assert all(torch.equal(params[k][1], stored_params[k]) for k in stored_params)
    assert all(torch.equal(state[slot][k][1], stored_state[slot][k])
               for slot in stored_state for k in stored_state[slot])
    # one member's own unroll equals its group's sweep exactly
    measure = M.loss(X[:2], y[:2])
    together = unroll_group(recipe, (X, y), first, measure)
    m, d = unroll_member(recipe, (X, y), first[2], measure)
    assert torch.equal(m, together[2][0]) and torch.equal(d, together[2][1])


def test_replayed_segment_keeps_the_pass_each_step_took():
    """The passes a GroupStep replay keeps (reused by reverse mode's mlp route) are the pass a fresh
    forward/backward at θ_t gives, bit for bit, dropout masks included; the last step has none."""
    X, y = _data()
    recipe = _recipe(OPTIMIZERS["momentum-decay"])
    members = T.train_group(recipe, (X, y), SEEDS)
    data = T.as_data((X, y), torch.float64)
    replayer = lockstep.Replayer(recipe, data, members)
    states = replayer.segment(3, 6)
    assert [fb is None for _, _, fb in states] == [False, False, True]
    for t, (params, _, kept) in enumerate(states[:-1], 3):
        idx = replayer.batch(t)
        fresh = replayer.group_step.forward_backward(params, data.X[idx], data.y[idx], replayer.weights[idx], t)
        assert all(torch.equal(a, b) for a, b in zip(kept.inputs + kept.deltas, fresh.inputs + fresh.deltas))
        assert all(torch.equal(kept.grads[k], fresh.grads[k]) for k in fresh.grads)


def test_store_loads_whole_groups_and_recomputes_a_partial_one(tmp_path, monkeypatch):
    X, y = _data()
    recipe = _recipe(OPTIMIZERS["momentum-decay"])
    T.train_group(recipe, (X, y), SEEDS, store=tmp_path)
    before = {s: member_path(tmp_path, s).read_bytes() for s in SEEDS}
    member_path(tmp_path, 7).unlink()  # as if killed before its file was written
    T.train_group(recipe, (X, y), SEEDS, store=tmp_path)
    assert {s: member_path(tmp_path, s).read_bytes() for s in SEEDS} == before
    monkeypatch.setattr(lockstep.GroupStep, "__call__", lambda *a, **k: pytest.fail("retrained a stored group"))
    loaded = T.train_group(recipe, (X, y), SEEDS, store=tmp_path)
    assert [m.record.group for m in loaded] == [tuple(SEEDS)] * 3


def test_train_ensemble_and_retrain_group_seeds():
    X, y = _data()
    recipe = _recipe(OPTIMIZERS["momentum-decay"])
    ens = dtda.train_ensemble(recipe, (X, y), seeds=5, group_size=2)
    assert [m.record.group for m in ens.members] == [(0, 1), (0, 1), (2, 3), (2, 3), (4,)][:4] + [None]
    removed = dtda.retrain(recipe, (X, y), seeds=[0, 1], remove=[2], group_size=2)
    w = torch.ones(14, dtype=torch.float64)
    w[2] = 0
    alone = dtda.retrain(recipe, (X, y), seeds=[0, 1], weights=w, group_size=1)
    assert all(_close(a.params, b.params) <= 1e-10 for a, b in zip(removed.members, alone.members))
    with pytest.raises(ValueError, match="group_size"):
        dtda.train_ensemble(recipe, (X, y), seeds=2, group_size=0)


def test_a_model_outside_the_chain_path_trains_in_groups_through_vmap():
    X, y = _data()
    recipe = _recipe(OPTIMIZERS["momentum-decay"],
                     model=lambda: nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.Linear(6, 3)))
    grouped = T.train_group(recipe, (X, y), SEEDS[:2])
    assert grouped[1].record.group == tuple(SEEDS[:2])
    assert isinstance(lockstep.group_step(recipe, T.as_data((X, y), torch.float64), SEEDS[:2], 9)[0],
                      lockstep.VmapGroupStep)


def test_a_non_finite_seed_fails_alone_with_the_one_at_a_time_message():
    X, y = _data()
    y = y.double()
    y[5] = 1e300  # finite (NaN data is refused before training), but its squared error overflows
    recipe = _recipe(OPTIMIZERS["momentum-decay"], epochs=None, steps=2, loss="mse",
                     model=lambda: nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 1)))
    hit = [s for s in range(8) if 5 in torch.cat(recipe.batches(14, s)).tolist()]
    miss = [s for s in range(8) if s not in hit]
    seeds = [hit[0], miss[0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = lockstep.train_group_results(recipe, (X, y), seeds)
    with pytest.raises(FloatingPointError) as alone:
        T.train_member(recipe, (X, y), hit[0])
    assert isinstance(results[0], FloatingPointError) and str(results[0]) == str(alone.value)
    assert isinstance(results[1], T.Member)


def test_default_group_size():
    assert lockstep.default_group_size(26122, 16, 1, memory=2**34) == 16
    assert lockstep.default_group_size(26122, 16, 2, memory=2**34) == 8
    assert lockstep.default_group_size(2**21, 64, 1, memory=2**34) == 2
    assert lockstep.default_group_size(100, 64, 1, memory=2**20) == 5
