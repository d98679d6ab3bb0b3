"""Groups of seeds through ``vmap`` (models that are not Linear chains) and forward mode batched
over a group's seeds: equal to one at a time (float64, 1e-10) for the training trajectory, m and
δ in both modes; bit-identical reruns; what vmap cannot take falls back with a notice."""

import pytest
import torch
from torch import nn

import dtda.measure as M
import dtda.train as T
from dtda.attribute import unroll_group, unroll_member
from dtda.train import lockstep

SEEDS = [3, 7]
GROUPS = [[0], [1, 2, 5], list(range(14))]


class Residual(nn.Module):
    """x + tanh(Linear(x)): a block the Linear-chain path does not take."""

    def __init__(self, width: int):
        super().__init__()
        self.inner = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.inner(x))


class ItemClamp(nn.Module):
    """Clamps at the batch maximum through ``.item()``, which vmap refuses."""

    def forward(self, x):
        return x.clamp(max=x.max().item())


def _layernorm():
    return nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3))


def _conv_residual():
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), Residual(8), nn.Linear(8, 3))


CASES = {"layernorm-adamw": (_layernorm, (3,), T.AdamW(0.05, weight_decay=0.1)),
         "conv-residual-momentum-decay": (_conv_residual, (1, 4, 4), T.SGD(0.2, momentum=0.9, weight_decay=0.05))}


def _data(shape, n=14):
    gen = torch.Generator().manual_seed(0)
    return torch.randn((n,) + shape, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def _recipe(model, optimizer):
    return T.Recipe(model=model, loss="cross_entropy", optimizer=optimizer, batch_size=4, epochs=2,
                    dtype=torch.float64, checkpoint_every=3, schedule=("warmup", 2, "cosine"))


def _close(a: dict, b: dict) -> float:
    worst = 0.0
    for k, v in a.items():
        worst = max(worst, _close(v, b[k]) if isinstance(v, dict) else
                    ((v - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-300)).item())
    return worst


def _assert_unrolls_agree(recipe, data, grouped, alone):
    measure = M.margin(data[0][:2], data[1][:2])
    for mode, groups in (("reverse", None), ("forward", GROUPS)):
        for (m_g, d_g), member in zip(unroll_group(recipe, data, grouped, measure, mode, groups), alone):
            m_a, d_a = unroll_member(recipe, data, member, measure, mode, groups)
            torch.testing.assert_close(m_g, m_a, rtol=1e-10, atol=0)
            torch.testing.assert_close(d_g, d_a, rtol=1e-10, atol=1e-10 * d_a.abs().max().item())
            assert d_a.abs().max() > 0


@pytest.mark.parametrize("case", list(CASES))
def test_vmap_group_equals_one_at_a_time_in_float64(case, recwarn):
    model, shape, optimizer = CASES[case]
    data, recipe = _data(shape), _recipe(model, optimizer)
    grouped = T.train_group(recipe, data, SEEDS)
    assert not [w for w in recwarn if issubclass(w.category, lockstep.LockstepFallback)]
    alone = [T.train_member(recipe, data, s) for s in SEEDS]
    for g, a in zip(grouped, alone):
        assert g.record.group == tuple(SEEDS)
        for t, (p, s) in a.record.checkpoints.items():
            assert _close(g.record.checkpoints[t][0], p) <= 1e-10 and _close(g.record.checkpoints[t][1], s) <= 1e-10
    _assert_unrolls_agree(recipe, data, grouped, alone)


def test_vmap_group_reruns_and_single_member_unrolls_are_bit_identical():
    model, shape, optimizer = CASES["layernorm-adamw"]
    data, recipe = _data(shape), _recipe(model, optimizer)
    first, second = T.train_group(recipe, data, SEEDS), T.train_group(recipe, data, SEEDS)
    for a, b in zip(first, second):
        for t, (p, _) in a.record.checkpoints.items():
            assert all(torch.equal(p[k], b.record.checkpoints[t][0][k]) for k in p)
    measure = M.loss(data[0][:2], data[1][:2])
    for mode, groups in (("reverse", None), ("forward", GROUPS)):
        together = unroll_group(recipe, data, first, measure, mode, groups)
        again = unroll_group(recipe, data, second, measure, mode, groups)
        assert all(torch.equal(a[1], b[1]) for a, b in zip(together, again))
    m, d = unroll_member(recipe, data, first[1], measure)  # stand-ins in the other slots
    together_reverse = unroll_group(recipe, data, first, measure)
    assert torch.equal(m, together_reverse[1][0]) and torch.equal(d, together_reverse[1][1])


def test_forward_mode_groups_a_linear_chain_with_dropout():
    X, y = _data((3,))
    recipe = T.Recipe(model=lambda: nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.3), nn.Linear(6, 3)),
                      loss="cross_entropy", optimizer=T.SGD(0.1, momentum=0.8, nesterov=True, weight_decay=0.05),
                      batch_size=4, epochs=2, dtype=torch.float64, checkpoint_every=3)
    grouped = T.train_group(recipe, (X, y), SEEDS)
    alone = [T.train_member(recipe, (X, y), s) for s in SEEDS]
    measure = M.margin(X[:2], y[:2])
    for (m_g, d_g), member, g in zip(unroll_group(recipe, (X, y), grouped, measure, "forward", GROUPS), alone, grouped):
        _, d_a = unroll_member(recipe, (X, y), member, measure, "forward", GROUPS)
        _, d_r = unroll_member(recipe, (X, y), g, measure, groups=GROUPS)  # reverse mode, summed
        torch.testing.assert_close(d_g, d_a, rtol=1e-10, atol=1e-10 * d_a.abs().max().item())
        torch.testing.assert_close(d_g, d_r, rtol=1e-10, atol=1e-10 * d_a.abs().max().item())


@pytest.mark.parametrize("model, why", [
    (lambda: nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.Dropout(0.2), nn.Linear(6, 3)), "Dropout"),
    (lambda: nn.Sequential(nn.Linear(3, 6), ItemClamp(), nn.Linear(6, 3)), "vmap refuses the model"),
])
def test_what_vmap_cannot_take_trains_one_at_a_time_with_a_notice(model, why):
    data, recipe = _data((3,)), _recipe(model, T.SGD(0.1))
    with pytest.warns(lockstep.LockstepFallback, match=rf"seeds \[3, 7\] train one at a time: .*{why}") as got:
        grouped = T.train_group(recipe, data, SEEDS[:2])
    assert len([w for w in got if issubclass(w.category, lockstep.LockstepFallback)]) == 1
    assert grouped[1].record.group is None
    alone = T.train_member(recipe, data, 7)
    assert all(torch.equal(grouped[1].params[k], alone.params[k]) for k in alone.params)
