"""A read-only run directory and a full disk: one clear error, and no file lost or half-written."""

import errno
import os
import stat

import pytest
from .faultkit import every_file, write_config

from dtda import cli
from dtda.rundir import RunDir


@pytest.fixture
def read_only(monkeypatch):
    """Make a directory read-only: chmod for a normal user; root ignores modes, so refuse its writes."""
    def make(run):
        if os.geteuid() != 0:
            for p in [run, *run.rglob("*")]:
                p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            return
        real_open = os.open

        def refuse_writes(path, flags, *args, **kw):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and os.path.abspath(path).startswith(str(run)):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kw)

        monkeypatch.setattr(os, "open", refuse_writes)
    yield make


def full_disk_after(monkeypatch, run, n: int) -> None:
    """Renames into ``run`` fail with ENOSPC after the first ``n``: a disk that fills up mid-run."""
    real_replace = os.replace
    done = [0]

    def replace(src, dst, **kw):
        if os.path.abspath(dst).startswith(str(run)):
            if done[0] >= n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done[0] += 1
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "replace", replace)


def one_error(err: str, text: str) -> None:
    """``err`` ends in one ``dtda:`` error (a seed task's error lists its seeds below it) holding ``text``."""
    lines = [line for line in err.splitlines() if line.startswith("dtda:")]
    assert len(lines) == 1 and text in err[err.index("dtda:"):] and "Traceback" not in err, err


def test_read_only_run_is_one_clear_error_and_verify_still_works(run_copy, read_only, capsys):
    (run_copy / "samples.safetensors").unlink()  # a stage would have to write
    before = every_file(run_copy)
    read_only(run_copy)
    try:
        for command in (["run", str(run_copy), "--quiet"], ["report", str(run_copy)]):
            capsys.readouterr()
            assert cli.main(command) == 1
            one_error(capsys.readouterr().err, f"cannot lock run directory {run_copy}")
        assert cli.main(["verify", str(run_copy)]) == 1  # reads only: names the missing file
        assert capsys.readouterr().out.strip().endswith("samples.safetensors: missing (recorded in the manifest)")
    finally:
        for p in [run_copy, *run_copy.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert every_file(run_copy) == before


def test_full_disk_keeps_every_file_and_names_the_one_it_could_not_write(run_copy, monkeypatch, capsys):
    (run_copy / "shards" / "2.safetensors").unlink()
    before = every_file(run_copy)
    full_disk_after(monkeypatch, run_copy, 0)
    capsys.readouterr()
    assert cli.main(["run", str(run_copy), "--quiet"]) == 1
    one_error(capsys.readouterr().err, f"cannot write {run_copy / 'manifest.json'}: No space left on device")
    assert every_file(run_copy) == before


@pytest.mark.parametrize("n", [3, 8])
def test_disk_filling_up_mid_run_then_resume_is_identical(tmp_path, reference, monkeypatch, capsys, n):
    out = tmp_path / "run"
    full_disk_after(monkeypatch, out, n)
    capsys.readouterr()
    assert cli.main(["run", str(write_config(tmp_path / "c.toml")), "--out", str(out), "--quiet"]) == 1
    one_error(capsys.readouterr().err, "No space left on device")
    run = RunDir(out)  # what was recorded is whole; nothing half-written is left
    assert all(run.manifest.problem(out / k) is None for k in run.manifest.files)
    assert not run.temporaries()
    monkeypatch.undo()
    assert cli.main(["run", str(out), "--quiet"]) == 0
    assert every_file(out) == every_file(reference)
