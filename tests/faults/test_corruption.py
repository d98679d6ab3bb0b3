"""Damaged run files: each is found by its checksum and recomputed from what it was derived from,
giving the uninterrupted run's bytes, or, for an input nothing can recompute, one clear error."""

import random
from pathlib import Path

import pytest
from .faultkit import digests, every_file

from dtda import cli
from dtda.rundir import RunDir

KINDS = ("members/1/member.safetensors", "shards/2.safetensors", "samples.safetensors",
         "statistics.safetensors", "summary.json", "report/index.html", "report/scatter.png", "manifest.json")


def damage(path: Path, how: str, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if how == "bitflip":
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    elif how == "truncate":
        del data[rng.randrange(len(data)):]
    elif how == "random":
        start = rng.randrange(len(data))
        stop = min(len(data), start + rng.randrange(1, 64))
        data[start:stop] = bytes(rng.randrange(256) for _ in range(stop - start))
        if data == path.read_bytes():
            data[start] ^= 0xFF
    elif how == "delete":
        path.unlink()
        return
    path.write_bytes(bytes(data))


def resume(run: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["run", str(run), "--quiet"])
    return code, capsys.readouterr().err


CASES = [(k, "bitflip") for k in KINDS] + [("shards/2.safetensors", h) for h in ("truncate", "random", "delete")] \
    + [("members/1/member.safetensors", "random"), ("samples.safetensors", "truncate"),
       ("statistics.safetensors", "random")]


@pytest.mark.parametrize("kind,how", CASES, ids=[f"{k}-{h}" for k, h in CASES])
def test_damaged_file_is_recomputed_to_identical_results(run_copy, reference, kind, how, capsys):
    damage(run_copy / kind, how, random.Random(f"{kind}-{how}"))
    assert cli.main(["verify", str(run_copy)]) == 1
    assert kind in capsys.readouterr().out  # verify names the file
    code, err = resume(run_copy, capsys)
    assert code == 0, err
    named = [line for line in err.splitlines() if line.startswith(kind)]
    assert kind == "manifest.json" or len(named) == 1, err  # one line says which file and why
    assert "Traceback" not in err
    assert every_file(run_copy) == every_file(reference)
    assert cli.main(["verify", str(run_copy)]) == 0


def test_report_of_a_run_with_damaged_statistics_recomputes_them_first(run_copy, reference, capsys):
    damage(run_copy / "statistics.safetensors", "truncate", random.Random(7))
    capsys.readouterr()
    assert cli.main(["report", str(run_copy)]) == 0
    assert "statistics.safetensors: " in capsys.readouterr().err
    assert digests(run_copy) == digests(reference)


def test_a_recomputed_input_with_other_bits_makes_what_was_derived_from_it_stale(tmp_path, capsys):
    run = RunDir(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("1")
    run.commit([a])
    b.write_text("derived from 1")
    run.commit([b], inputs=[a])
    assert run.trusted(b)
    a.write_text("2")
    run.commit([a])  # a was recomputed differently: b must not survive it
    assert not run.trusted(b) and not b.exists()
    assert "b: its input a has changed since it was recorded; recomputing it" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["config.toml", "fingerprint"])
def test_damaged_config_is_one_clear_error_and_nothing_changes(run_copy, name, capsys):
    damage(run_copy / name, "bitflip", random.Random(name))
    before = every_file(run_copy)
    code, err = resume(run_copy, capsys)
    assert code == 1
    assert err.count("\n") == 1 and f"{name}: sha256 differs from the manifest" in err and "cannot be recomputed" in err
    assert every_file(run_copy) == before


def test_changed_data_file_is_one_clear_error_naming_it(tmp_path, capsys):
    csv = tmp_path / "data.csv"
    rng = random.Random(0)
    csv.write_text("x,y\n" + "".join(f"{rng.uniform(-1, 1):.4f},{rng.uniform(-1, 1):.4f}\n" for _ in range(30)))
    config = tmp_path / "c.toml"
    config.write_text('[data]\nsource = "csv:data.csv"\ntarget = "y"\n[model]\nname = "mlp:4"\n'
                      '[train]\nseeds = 2\nbatch_size = 8\nsteps = 3\n[measure]\ntest = 2\n[statistics]\nbootstrap = 0\n')
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    csv.write_text(csv.read_text().replace("\n0", "\n1", 1) + "0.5,0.5\n")
    capsys.readouterr()
    assert cli.main(["train", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"its input {csv.resolve()} has changed" in err
    assert cli.main(["train", str(config), "--out", str(out), "--quiet"]) == 1
    assert f"cannot be resumed: config.toml: its input {csv.resolve()} has changed" in capsys.readouterr().err


def test_stale_temporaries_of_a_killed_run_are_removed(run_copy, reference, capsys):
    (run_copy / ".report.k2j3.tmp").mkdir()
    (run_copy / ".report.k2j3.tmp" / "scatter.png").write_bytes(b"half")
    (run_copy / "shards" / ".0.safetensors.x1.tmp").write_bytes(b"half")
    (run_copy / "members" / "2" / ".member.y7.tmp").write_bytes(b"half")
    assert cli.main(["verify", str(run_copy)]) == 1
    assert capsys.readouterr().out.count("temporary file of an interrupted run") == 3
    code, err = resume(run_copy, capsys)
    assert code == 0 and "removed 3 temporary file(s) left by an interrupted run" in err
    assert every_file(run_copy) == every_file(reference)


def test_verify_changes_nothing_and_names_each_problem(run_copy, capsys):
    (run_copy / "shards" / "0.safetensors").unlink()
    damage(run_copy / "summary.json", "truncate", random.Random(1))
    (run_copy / "notes.txt").write_text("mine")
    before = every_file(run_copy)
    capsys.readouterr()
    assert cli.main(["verify", str(run_copy)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    assert out[0].endswith("shards/0.safetensors: missing (recorded in the manifest)")
    assert "summary.json:" in out[1] and "truncated" in out[1]
    assert out[2].endswith("notes.txt: not recorded in the manifest")
    assert every_file(run_copy) == before
