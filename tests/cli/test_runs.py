"""Run directories end to end: stages, resume after kill -9 (bit-identical), refusal, --force, reports."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tiny import write_tiny

from dtda import cli

KILLER = Path(__file__).parents[1] / "faults" / "_killer.py"  # dtda that SIGKILLs itself at a chosen point
RESULTS = ("samples.safetensors", "statistics.safetensors", "summary.json", "config.toml", "fingerprint")


def _dtda(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "dtda", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_run_then_stages_and_report_sections(tiny, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", str(tiny), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in (out / "members").iterdir()) == ["0", "1", "2"]
    assert not (out / "shards").exists()
    assert cli.main(["attribute", str(out), "--quiet"]) == 0
    assert (out / "samples.safetensors").is_file() and (out / "summary.json").is_file()
    assert cli.main(["report", str(out)]) == 0
    report = out / "report"
    assert {"index.html", "report.md", "scatter.png", "distribution_0.png"} <= {p.name for p in report.iterdir()}
    md = (report / "report.md").read_text()
    for section in ("## Mean shift against variance increase", "## Measurement output[test 10]",
                    "### Top 3 by mean shift", "### Top 3 by variance increase", "### Top 3 by W2",
                    "## All measurements"):
        assert section in md
    assert "<h2>Mean shift against variance increase</h2>" in (report / "index.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["K"] == 3 and summary["N"] == 40 and summary["Q"] == 2
    top = summary["measurements"][0]["top"]["var_increase"][0]
    assert top["ci"][0] <= top["ci"][1]


def test_statistics_are_the_same_bits_with_measurements_side_by_side(tiny, tmp_path, monkeypatch):
    """The statistics stage runs the measurements concurrently, one per free core: a machine with
    one core (one at a time) and one with eight (both of the tiny run's side by side) agree."""
    runs = {}
    for cores in (1, 8):
        monkeypatch.setattr("dtda.pipeline.os.sched_getaffinity", lambda pid, cores=cores: set(range(cores)))
        runs[cores] = tmp_path / f"cores{cores}"
        assert cli.main(["run", str(tiny), "--out", str(runs[cores]), "--quiet"]) == 0
    for name in ("statistics.safetensors", "summary.json"):
        assert (runs[1] / name).read_bytes() == (runs[8] / name).read_bytes(), name


def test_statistics_threads_run_the_callers_forced_backend(tiny, tmp_path, monkeypatch):
    """``use_backend`` is thread-local; the statistics stage's pool threads take the caller's."""
    from dtda import ops

    monkeypatch.setattr("dtda.pipeline.os.sched_getaffinity", lambda pid: set(range(8)))
    with ops.use_backend("reference"):
        assert cli.main(["run", str(tiny), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert ops.last_backend("seed_moments") == "reference"


def test_resume_after_kill_9_is_bit_identical(tmp_path):
    """Killed while a group of seeds is in flight, the rerun recomputes only unfinished groups."""
    config = write_tiny(tmp_path / "c.toml", seeds=4, extra="[execution]\nseeds_per_group = 2\n")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # Both runs in fresh processes: the same command, with the same torch thread settings.
    assert _dtda("run", str(config), "--out", str(whole), "--quiet").wait(timeout=600) == 0

    # The run kills itself just before the third shard is renamed into place: the first group is
    # stored, the second is in flight. (Polling for a shard and then killing raced a fast machine.)
    env = {**os.environ, "FAULT_HOOK": "replace", "FAULT_STAGE": "attribute", "FAULT_N": "3",
           "FAULT_PIDS": str(tmp_path / "pids.json")}
    proc = subprocess.run([sys.executable, str(KILLER), "run", str(config), "--out", str(killed), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (killed / "samples.safetensors").exists()
    shards = killed / "shards"
    assert {p.name for p in shards.iterdir() if p.suffix == ".safetensors"} == {"0.safetensors", "1.safetensors"}

    rerun = _dtda("run", str(config), "--out", str(killed), "--quiet")
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert "(2/2)" in err  # only the second group was recomputed
    for seed in range(4):
        assert json.loads(_member_meta(killed, seed))["group"] == [2 * (seed // 2), 2 * (seed // 2) + 1]
    for name in RESULTS:
        assert (whole / name).read_bytes() == (killed / name).read_bytes(), name
    for seed in range(4):
        assert (whole / "shards" / f"{seed}.safetensors").read_bytes() == \
               (killed / "shards" / f"{seed}.safetensors").read_bytes()


def _member_meta(run, seed) -> str:
    from safetensors import safe_open

    with safe_open(str(run / "members" / str(seed) / "member.safetensors"), framework="pt") as f:
        return f.metadata()["dtda"]


def test_refuses_another_configs_directory_and_force_moves_it_aside(tmp_path, capsys):
    out = tmp_path / "run"
    a = write_tiny(tmp_path / "a.toml")
    b = write_tiny(tmp_path / "b.toml", extra="[data]\n" if False else "")
    b.write_text(b.read_text().replace("lr = 0.01", "lr = 0.02"))
    assert cli.main(["train", str(a), "--out", str(out), "--quiet"]) == 0
    before = (out / "fingerprint").read_text()
    assert cli.main(["train", str(b), "--out", str(out), "--quiet"]) == 1
    assert "was made for another configuration" in capsys.readouterr().err
    assert (out / "fingerprint").read_text() == before  # untouched
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    assert cli.main(["train", str(a), "--out", str(tmp_path / "junk"), "--quiet"]) == 1
    assert "is not empty and is not a dtda run" in capsys.readouterr().err

    assert cli.main(["train", str(b), "--out", str(out), "--force", "--quiet"]) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run.moved-")]
    assert len(moved) == 1 and (moved[0] / "fingerprint").read_text() == before
    assert (moved[0] / "members" / "0" / "member.safetensors").is_file()  # old results kept
    assert (out / "fingerprint").read_text() != before


def test_non_finite_training_is_reported_per_seed(tmp_path, capsys):
    config = write_tiny(tmp_path / "c.toml")
    config.write_text(config.read_text().replace("lr = 0.01", "lr = 1e30"))
    assert cli.main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    failures = json.loads((tmp_path / "run" / "failures.json").read_text())
    assert sorted(failures) == ["0", "1", "2"]
    assert "seed 0: non-finite training loss at step" in failures["0"]
    assert "only 0 seed(s) finished" in capsys.readouterr().err


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "--quiet"]) == 0
    report = out / "report"
    assert {"index.html", "report.md", "scatter.png", "examples_0.png"} <= {p.name for p in report.iterdir()}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["Q"] >= 20 and summary["K"] == 4
    assert "### The top training examples" in (report / "report.md").read_text()


def test_without_matplotlib_the_run_says_so_first_and_writes_the_report_without_plots(tiny, tmp_path, capsys,
                                                                                         monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    out = tmp_path / "run"
    assert cli.main(["run", str(tiny), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    notice = err.index("pip install 'dtda[report]'")
    assert notice < err.index("train + attribute members")  # before any work
    report = out / "report"
    assert not list(report.glob("*.png"))
    md = (report / "report.md").read_text()
    assert "matplotlib is not installed" in md and "### Top 3 by variance increase" in md
