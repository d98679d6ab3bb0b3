"""Recipe validation, schedules, batch plans and seed streams."""

import math

import pytest
import torch
from torch import nn

import dtda.train as T
from dtda.train import schedule
from dtda.train.seeds import check_seeds, stream_seed


def _model():
    return nn.Linear(3, 2)


def _recipe(**kw):
    base = dict(model=_model, loss="cross_entropy", optimizer=T.SGD(0.1), batch_size=4, epochs=2)
    base.update(kw)
    return T.Recipe(**base)


@pytest.mark.parametrize("kw,match", [
    (dict(loss="hinge"), "loss must be one of"),
    (dict(epochs=None), "exactly one of epochs and steps"),
    (dict(steps=10), "exactly one of epochs and steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(batching="shuffle"), "batching"),
    (dict(schedule="exp"), "schedule"),
    (dict(schedule=("step", 0, 0.5)), "step_size"),
    (dict(dtype=torch.float16), "dtype"),
    (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(optimizer=torch.optim.SGD), "optimizer"),
    (dict(model=nn.Linear(3, 2)), "factory"),
])
def test_recipe_rejects_bad_arguments(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _recipe(**kw)


def test_batchnorm_is_refused():
    recipe = _recipe(model=lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        recipe.build(0)


def test_schedules():
    T_ = 10
    assert schedule.multiplier("constant", 7, T_) == 1.0
    assert schedule.multiplier("cosine", 0, T_) == 1.0
    assert math.isclose(schedule.multiplier("cosine", 5, T_), 0.5)
    assert math.isclose(schedule.multiplier("linear", 5, T_), 0.5)
    assert schedule.multiplier(("step", 3, 0.1), 7, T_) == pytest.approx(0.01)
    warm = schedule.check_schedule(["warmup", 4, "cosine"])
    assert [schedule.multiplier(warm, t, T_) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert math.isclose(schedule.multiplier(warm, 7, T_), 0.5)  # cosine at 3 of 6


def test_epoch_batches_are_permutations_and_iid_batches_are_full():
    recipe = _recipe(batch_size=4, epochs=3)
    batches = recipe.batches(10, seed=2)
    assert recipe.num_steps(10) == len(batches) == 9
    for e in range(3):
        epoch = torch.cat(batches[3 * e:3 * e + 3])
        assert sorted(epoch.tolist()) == list(range(10))
    iid = _recipe(batching="iid", epochs=None, steps=7).batches(10, seed=2)
    assert len(iid) == 7 and all(len(b) == 4 and int(b.max()) < 10 for b in iid)


def test_seed_streams_are_independent():
    a = _recipe(batch_size=4).build(5).weight
    b = _recipe(batch_size=2, optimizer=T.AdamW(0.1)).build(5).weight
    assert torch.equal(a, b)  # initialisation does not depend on batching or optimiser
    assert not torch.equal(a, _recipe().build(6).weight)
    assert len({stream_seed(1, s) for s in ("init", "batches", "dropout")}) == 3
    assert stream_seed(1, "dropout", 3) != stream_seed(1, "dropout", 4)
    assert _recipe().batches(10, 1)[0].tolist() != _recipe().batches(10, 2)[0].tolist()


def test_check_seeds():
    assert check_seeds(3) == [0, 1, 2]
    assert check_seeds([5, 2]) == [5, 2]
    for bad in (0, [1, 1], [-1], [1.5], True):
        with pytest.raises((ValueError, TypeError)):
            check_seeds(bad)
