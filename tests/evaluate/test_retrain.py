"""Coupled retraining: both modes, lockstep groups, the cache (resume, atomic, refusal) and the executor."""

import pytest
import torch

import dtda
from dtda.evaluate import CacheMismatch, Removal, retrain_measurements, retrained_samples
from dtda.train.data import as_data
from dtda.train.executors import LocalExecutor


class CountingExecutor(LocalExecutor):
    """Counts the members trained (a task is one removal's lockstep group of seeds)."""

    def __init__(self):
        super().__init__()
        self.tasks = 0

    def run(self, job, seeds, on_result):
        def count(task, result):
            self.tasks += len(result)
            on_result(task, result)

        super().run(job, seeds, count)


def test_empty_removal_reproduces_the_attributed_runs(linear):
    m = retrain_measurements(linear.recipe, linear.train, linear.measure, [[]], linear.samples.seeds)
    assert torch.equal(m[0], linear.samples.m)


def test_masked_mode_is_dtda_retrain_and_subset_mode_trains_on_the_rest(linear):
    p = linear
    got = retrain_measurements(p.recipe, p.train, p.measure, [[1, 5]], [2, 0], "masked")[0]
    ens = dtda.train.retrain(p.recipe, p.train, [2, 0], remove=[1, 5])
    assert torch.equal(got, torch.stack([p.measure(ens.model(i)) for i in range(2)]).detach())
    X, y = p.train
    keep = [i for i in range(len(X)) if i not in (1, 5)]
    sub = dtda.train_ensemble(p.recipe, (X[keep], y[keep]), [2])
    got = retrain_measurements(p.recipe, p.train, p.measure, [[5, 1]], [2], "subset")[0, 0]
    assert torch.equal(got, p.measure(sub.model(0)).detach())
    tiny = retrain_measurements(p.recipe, p.train, p.measure, [Removal.of([1], 16, 1 - 1e-3)], [2], "masked")
    assert 0 < (tiny[0, 0] - p.samples.m[2]).abs().max() < 1e-2


def test_cache_resumes_and_refuses_another_measurement(linear, tmp_path):
    p = linear
    ex = CountingExecutor()
    first = retrained_samples(p.samples, p.recipe, p.train, p.measure, [[0], [3, 4]], seeds=[0, 1, 7],
                              mode="subset", cache=tmp_path, executor=ex)
    assert ex.tasks == 2 * 3 + 1  # seed 7 is not attributed: its full-data run is trained too
    files = sorted(f.relative_to(tmp_path).parts[:2] for f in tmp_path.rglob("*.safetensors"))
    assert files == [("masked", "group4")] + [("subset", "group4")] * 6 and not list(tmp_path.rglob("*.tmp"))
    again = retrained_samples(p.samples, p.recipe, p.train, p.measure, [[3, 4], [0]], seeds=[0, 1, 7],
                              mode="subset", cache=tmp_path, executor=ex)
    assert ex.tasks == 7
    assert torch.equal(again.delta[:, 0], first.delta[:, 1]) and again.groups == [[3, 4], [0]]
    assert again.method == "retrain-subset" and again.seeds == [0, 1, 7]
    assert torch.equal(first.m[:2], p.samples.m[:2])
    other = dtda.measure.output(as_data(p.train, torch.float64).X[:2])
    with pytest.raises(CacheMismatch, match="another recipe, dataset or measurement"):
        retrain_measurements(p.recipe, p.train, other, [[0]], [0], cache=tmp_path)


def test_retraining_in_the_runs_groups_reproduces_its_members_bit_for_bit(hidden, tmp_path):
    p = hidden  # 4 seeds trained in one lockstep group
    alone = retrain_measurements(p.recipe, p.train, p.measure, [[]], p.samples.seeds, group_size=1)[0]
    assert not torch.equal(alone, p.samples.m)  # the one-member path sums in another order
    pairs = retrain_measurements(p.recipe, p.train, p.measure, [[], [3]], p.samples.seeds, group_size=2,
                                 cache=tmp_path)
    assert torch.equal(pairs[0], p.samples.m)
    ens = dtda.train.retrain(p.recipe, p.train, [2, 3], remove=[3], group_size=2)
    assert torch.equal(pairs[1, 2:], torch.stack([p.measure(ens.model(i)) for i in range(2)]).detach())
    # A group with a seed missing from the cache is retrained whole; the cached seed is not rewritten.
    (tmp_path / "masked" / "group2" / Removal.of([3], 16).key / "1.safetensors").unlink()
    kept = tmp_path / "masked" / "group2" / Removal.of([3], 16).key / "0.safetensors"
    before = kept.stat().st_mtime_ns
    ex = CountingExecutor()
    again = retrain_measurements(p.recipe, p.train, p.measure, [[], [3]], p.samples.seeds, group_size=2,
                                 cache=tmp_path, executor=ex)
    assert ex.tasks == 2 and torch.equal(again, pairs) and kept.stat().st_mtime_ns == before
    assert not (tmp_path / "masked" / "group1").exists()


def test_bad_input_is_refused_before_training(linear):
    p = linear
    with pytest.raises(ValueError, match="mode must be one of"):
        retrain_measurements(p.recipe, p.train, p.measure, [[0]], [0], "exact")
    with pytest.raises(ValueError, match=r"indices must be in \[0, N=16\)"):
        retrain_measurements(p.recipe, p.train, p.measure, [[16]], [0])
    with pytest.raises(ValueError, match="need mode 'masked'"):
        retrain_measurements(p.recipe, p.train, p.measure, [Removal.of([0], 16, 0.5)], [0], "subset")
    with pytest.raises(ValueError, match="group_size must be a positive int"):
        retrain_measurements(p.recipe, p.train, p.measure, [[0]], [0], group_size=0)
