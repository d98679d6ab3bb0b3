"""Runs with influence methods: config validation of [attribute], and a run that compares methods."""

import json

import pytest
import tomllib
from tiny import write_tiny

from dtda import cli, config
from dtda.samples import SeedSamples


def test_attribute_section_is_validated_with_every_problem_named():
    with pytest.raises(config.ConfigError) as e:
        config.validate({"data": {"source": "toy:regression1d"},
                         "attribute": {"method": "nope", "compare": ["unroll", "unroll"], "damping": -1.0,
                                       "fisher": "exact", "options": {"max_iter": 3}}})
    text = "\n".join(e.value.problems)
    for expected in ("attribute.method: expected one of 'unroll'", "attribute.compare: expected a list of distinct",
                     "attribute.damping: expected a finite number >= 0", "attribute.fisher: expected one of"):
        assert expected in text
    with pytest.raises(config.ConfigError, match="unknown option.*'max_iter'.*unroll, ekfac"):
        config.validate({"data": {"source": "toy:regression1d"},
                         "attribute": {"method": "unroll", "compare": ["ekfac"], "options": {"max_iter": 3}}})
    with pytest.raises(config.ConfigError, match="lists the main method 'ekfac' again"):
        config.validate({"data": {"source": "toy:regression1d"},
                         "attribute": {"method": "ekfac", "compare": ["ekfac"]}})


def test_attribute_options_round_trip_through_toml():
    resolved = config.validate({"data": {"source": "toy:regression1d"},
                                "attribute": {"method": "ekfac", "damping": 0.01, "fisher": "empirical",
                                              "compare": ["unroll"], "options": {"query_rank": 4}}})
    assert config.validate(tomllib.loads(config.to_toml(resolved))) == resolved


def test_run_with_influence_compared_to_unrolling(tmp_path):
    extra = '\n[attribute]\nmethod = "unroll"\ncompare = ["ekfac", "identity"]\nfisher = "empirical"\n'
    path = write_tiny(tmp_path / "c.toml", extra=extra)
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    main = SeedSamples.load(out / "samples.safetensors")
    ekfac = SeedSamples.load(out / "samples.ekfac.safetensors")
    assert main.method == "unroll-reverse" and ekfac.method == "influence-ekfac"
    assert ekfac.seeds == main.seeds and ekfac.delta.shape == main.delta.shape
    assert (ekfac.m == main.m).all()  # the same trained models
    table = json.loads((out / "agreement.json").read_text())
    assert set(table) == {"ekfac", "identity"}
    for entry in table.values():
        assert len(entry["spearman_mean"]) == main.Q
        assert all(v is None or -1 <= v <= 1 for v in entry["median_seed_pearson"])
    md = (out / "report" / "report.md").read_text()
    assert "## How the methods agree with unroll-reverse" in md and "influence-ekfac" in md


def test_run_with_an_influence_method_as_the_main_one(tmp_path):
    path = write_tiny(tmp_path / "c.toml", extra='\n[attribute]\nmethod = "kfac"\ndamping = "heuristic"\n')
    out = tmp_path / "run"
    assert cli.main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    samples = SeedSamples.load(out / "samples.safetensors")
    assert samples.method == "influence-kfac" and samples.delta.isfinite().all()
    assert not (out / "agreement.json").exists()


def test_diagnose_writes_the_table_and_plot(tmp_path, capsys):
    path = write_tiny(tmp_path / "c.toml")
    out = tmp_path / "run"
    assert cli.main(["train", str(path), "--out", str(out), "--quiet"]) == 0
    assert cli.main(["diagnose", str(out), "--method", "nope"]) == 2
    assert "--method: expected an influence method" in capsys.readouterr().err
    assert cli.main(["diagnose", str(out), "--method", "exact", "--measurements", "1", "--seeds", "1"]) == 0
    table = json.loads((out / "diagnose" / "diagnose.json").read_text())
    steps = sorted({row["step"] for row in table["rows"]})
    assert steps and steps[-1] == 12 and all(row["seed"] == 0 for row in table["rows"])
    assert all(-1 <= row["correlation"] <= 1 for row in table["rows"])
    assert (out / "diagnose" / "diagnose.png").is_file()
    assert "| seed | step | measurement | correlation | null_share |" in (out / "diagnose" / "diagnose.md").read_text()
    assert cli.main(["verify", str(out)]) == 0  # the diagnosis is recorded in the manifest
