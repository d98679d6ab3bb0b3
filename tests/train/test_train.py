"""Training members and ensembles: determinism, store/resume, retraining, errors."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import dtda
import dtda.train as T


def _data(n=12):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen)


def _recipe(**kw):
    base = dict(model=lambda: nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Dropout(0.2), nn.Linear(6, 3)),
                loss="cross_entropy", optimizer=T.SGD(0.2, momentum=0.9), batch_size=4, epochs=3,
                dtype=torch.float64, checkpoint_every=2)
    base.update(kw)
    return T.Recipe(**base)


def _same(a: T.Ensemble, b: T.Ensemble) -> bool:
    return all(torch.equal(x.params[k], y.params[k]) for x, y in zip(a.members, b.members) for k in x.params)


def test_ensemble_api_and_bit_identical_reruns():
    X, y = _data()
    ens = dtda.train_ensemble(_recipe(), (X, y), seeds=[3, 7])
    assert len(ens) == 2 and ens.seeds == [3, 7]
    assert _same(ens, dtda.train_ensemble(_recipe(), (X, y), seeds=[3, 7]))
    model = ens.model(1)
    assert not model.training
    assert torch.equal(model[0].weight.detach(), ens.member(1).params["0.weight"])
    rec = ens.record(0)
    assert rec.steps == 9 and sorted(rec.checkpoints) == [0, 2, 4, 6, 8, 9]
    assert not torch.equal(ens.member(0).params["0.weight"], ens.member(1).params["0.weight"])


def test_dataset_input_equals_tensors():
    X, y = _data()
    a = dtda.train_ensemble(_recipe(), (X, y), seeds=1)
    b = dtda.train_ensemble(_recipe(), TensorDataset(X, y), seeds=1)
    assert _same(a, b)


def test_store_resume_loads_bit_identical(tmp_path):
    X, y = _data()
    first = dtda.train_ensemble(_recipe(optimizer=T.AdamW(0.05)), (X, y), seeds=2, store=tmp_path)
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["members/0/member.safetensors", "members/1/member.safetensors"]
    second = dtda.train_ensemble(_recipe(optimizer=T.AdamW(0.05)), (X, y), seeds=2, store=tmp_path)
    assert _same(first, second)
    for a, b in zip(first.members, second.members):
        assert [x.tolist() for x in a.record.batches] == [x.tolist() for x in b.record.batches]
        for t, (p, s) in a.record.checkpoints.items():
            q, r = b.record.checkpoints[t]
            assert list(p) == list(q) and all(torch.equal(p[k], q[k]) for k in p)
            assert all(torch.equal(s[slot][k], r[slot][k]) for slot in s for k in s[slot])
    with pytest.raises(ValueError, match="another recipe"):
        dtda.train_ensemble(_recipe(optimizer=T.AdamW(0.1)), (X, y), seeds=2, store=tmp_path)


def test_store_resume_skips_training(tmp_path, monkeypatch):
    X, y = _data()
    dtda.train_ensemble(_recipe(), (X, y), seeds=1, store=tmp_path)
    monkeypatch.setattr(T.member.Step, "__call__", lambda *a, **k: pytest.fail("retrained a stored member"))
    dtda.train_ensemble(_recipe(), (X, y), seeds=1, store=tmp_path)


def test_masked_retrain_keeps_batches_and_zero_weight_example_is_ignored():
    X, y = _data()
    recipe = _recipe()
    base = dtda.train_ensemble(recipe, (X, y), seeds=[4])
    removed = dtda.retrain(recipe, (X, y), seeds=[4], remove=[2])
    w = torch.ones(12, dtype=torch.float64)
    w[2] = 0.0
    weighted = dtda.retrain(recipe, (X, y), seeds=[4], weights=w)
    assert _same(removed, weighted) and not _same(base, removed)
    assert [b.tolist() for b in base.record(0).batches] == [b.tolist() for b in removed.record(0).batches]
    # changing a weight-0 example's input changes nothing: it really is removed
    X2 = X.clone()
    X2[2] += 100.0
    assert _same(removed, dtda.retrain(recipe, (X2, y), seeds=[4], remove=[2]))


def test_non_finite_loss_names_seed_step_and_examples():
    X, y = _data()
    y[5] = 7  # a loss that is infinite for example 5 only (NaN data is refused before training)
    recipe = _recipe(model=lambda: nn.Linear(3, 3), loss=lambda out, t: out.sum(1).square() / (t != 7))
    batches = recipe.batches(12, 9)
    step = next(t for t, b in enumerate(batches) if 5 in b.tolist())
    with pytest.raises(FloatingPointError, match=rf"seed 9: non-finite training loss at step {step} .*\[5\]"):
        dtda.train_ensemble(recipe, (X, y), seeds=[9])


def test_bad_data_and_weights():
    X, y = _data()
    with pytest.raises(ValueError, match="same non-zero length"):
        dtda.train_ensemble(_recipe(), (X, y[:5]), seeds=1)
    with pytest.raises(ValueError, match="integer class targets"):
        dtda.train_ensemble(_recipe(), (X, y.double()), seeds=1)
    with pytest.raises(ValueError, match="shape \\[12\\]"):
        dtda.retrain(_recipe(), (X, y), seeds=1, weights=torch.ones(5))
    with pytest.raises(ValueError, match="remove"):
        dtda.retrain(_recipe(), (X, y), seeds=1, remove=[12])
