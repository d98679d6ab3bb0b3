"""SeedSamples: validation, grouping, subsets, ranking, persistence."""

import json

import pytest
import torch
from safetensors.torch import save_file

from dtda.stats import Distributional, Top
from dtda.samples import SeedSamples


def test_sizes(samples):
    assert (samples.K, samples.N, samples.Q, len(samples)) == (12, 7, 3, 7)


@pytest.mark.parametrize("kwargs, match", [
    (dict(m=torch.zeros(3)), r"m must be 2-D \[K, Q\], got shape \[3\]"),
    (dict(delta=torch.zeros(3, 2)), r"delta must be 3-D"),
    (dict(delta=torch.zeros(4, 5, 2)), r"delta must have shape \[K, N, Q\] = \[3, N, 2\]"),
    (dict(seeds=[0, 1]), r"seeds must list K = 3 seed ids"),
    (dict(seeds=[0, 1, 1]), r"seeds must be distinct"),
    (dict(names=["a"]), r"names must list Q = 2 measurement names"),
    (dict(method=""), r"method must be a non-empty string"),
    (dict(groups=[[0]]), r"groups must list one group per row of delta \(G = 5\)"),
    (dict(m=torch.zeros(3, 2, dtype=torch.long)), r"m must be a floating-point tensor"),
])
def test_bad_inputs_raise_clear_errors(kwargs, match):
    args = dict(m=torch.zeros(3, 2), delta=torch.zeros(3, 5, 2), seeds=[0, 1, 2], names=["a", "b"],
                method="x")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SeedSamples(**args)
    with pytest.raises(TypeError, match="delta must be a torch.Tensor"):
        SeedSamples(torch.zeros(3, 2), [[0.0]], [0, 1, 2], ["a", "b"], "x")


def test_group_is_sum(samples):
    groups = [[0, 3], [6], [], [1, 2, 4, 5]]
    g = samples.group(groups)
    assert g.groups == groups and g.N == 4 and g.method == samples.method
    expect = torch.stack([samples.delta[:, grp].sum(1) for grp in groups], 1)
    torch.testing.assert_close(g.delta, expect, rtol=1e-15, atol=0)
    assert torch.equal(g.m, samples.m)
    d = g.distributional(bootstrap=0)
    assert d.groups == groups and d.mean.shape == (4, 3)
    with pytest.raises(ValueError, match="already per group"):
        g.group([[0]])
    with pytest.raises(ValueError, match=r"group 0 has indices outside \[0, N=7\): \[7\]"):
        samples.group([[7]])
    with pytest.raises(ValueError, match="repeats an example index"):
        samples.group([[1, 1]])


def test_subset_selects_seeds_by_id(samples):
    sub = samples.subset([105, 101])
    assert sub.seeds == [105, 101]
    assert torch.equal(sub.m, samples.m[[5, 1]]) and torch.equal(sub.delta, samples.delta[[5, 1]])
    with pytest.raises(ValueError, match=r"unknown: \[3\]"):
        samples.subset([3])


def test_top_ordering(samples):
    d = samples.distributional(bootstrap=0)
    for by in ("w2", "mean", "abs_mean", "var_increase", "shape_w2", "quantile_0.9", "sign_agreement"):
        for query in (None, 1, "q2"):
            for largest in (True, False):
                top = d.top(3, by=by, query=query, largest=largest)
                col = d.get(by).mean(1) if query is None else d.get(by)[:, d.query_index(query)]
                order = sorted(range(samples.N), key=lambda n: col[n].item(), reverse=largest)[:3]
                assert isinstance(top, Top) and top.indices.tolist() == order
                assert torch.equal(top.values, col[order])
    a, b = samples.top(3, by="abs_mean", query="q1"), d.top(3, by="abs_mean", query="q1")
    assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values) and a.query == "q1"
    assert samples.top(2, by="quantile_0.75").indices.shape == (2,)  # level computed on demand
    assert samples.top(100).indices.shape == (samples.N,)


def test_top_ties_keep_lower_index_first():
    m = torch.randn(4, 1, dtype=torch.float64)
    delta = torch.tensor([1.0, 2.0, 2.0, 1.0], dtype=torch.float64).view(1, 4, 1).repeat(4, 1, 1)
    s = SeedSamples(m, delta, [0, 1, 2, 3], ["q"], "x")
    assert s.top(4, by="mean").indices.tolist() == [1, 2, 0, 3]
    assert s.top(4, by="mean", largest=False).indices.tolist() == [0, 3, 1, 2]


def test_top_and_get_reject_unknown(samples):
    with pytest.raises(ValueError, match="unknown statistic 'nope'"):
        samples.top(3, by="nope")
    with pytest.raises(ValueError, match="unknown query 'zz'"):
        samples.top(3, query="zz")
    d = samples.distributional(bootstrap=0)
    with pytest.raises(ValueError, match=r"no quantile shift 'quantile_0.3'"):
        d.get("quantile_0.3")


def test_save_load_round_trip_bit_identical(tmp_path, samples):
    g = samples.group([[0, 1], [2]])
    for s, name in ((samples, "a.safetensors"), (g, "sub/b.safetensors")):
        path = s.save(tmp_path / name)
        back = SeedSamples.load(path)
        assert torch.equal(back.m, s.m) and torch.equal(back.delta, s.delta)
        assert back.m.dtype == s.m.dtype
        assert (back.seeds, back.names, back.method, back.groups, back.meta) == \
            (s.seeds, s.names, s.method, s.groups, s.meta)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.safetensors", "b.safetensors", "sub"]


def test_save_rejects_non_json_meta(tmp_path, samples):
    samples.meta["bad"] = object()
    with pytest.raises(ValueError, match="meta must be JSON-serialisable"):
        samples.save(tmp_path / "x.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="is not a SeedSamples file"):
        SeedSamples.load(path)
    with pytest.raises(FileNotFoundError):
        SeedSamples.load(tmp_path / "missing.safetensors")


def test_distributional_result_helpers(samples):
    d = samples.distributional(bootstrap=20, seed=0)
    assert isinstance(d, Distributional) and d.levels == (0.1, 0.5, 0.9) and d.names == samples.names
    rows = d.table("q1", indices=[0, 2], statistics=["mean", "p_t"])
    assert [r["index"] for r in rows] == [0, 2]
    assert set(rows[0]) == {"index", "mean", "mean_lo", "mean_hi", "p_t"}
    assert rows[1]["mean"] == d.mean[2, 1].item() and rows[1]["mean_lo"] == d.ci["mean"][0, 2, 1].item()
    blob = json.loads(json.dumps(d.to_dict()))
    assert blob["statistics"]["quantile_0.9"] == d.quantile_shift[2].tolist()
    assert len(blob["ci"]["w2"]) == 2 and blob["K"] == 12
    assert blob["summary"]["mean_p"] == d.p.mean(0).tolist() and len(blob["summary"]["mean_p_t"]) == 3
