"""kill -9 of the driver at seeded points of every stage, with the local and the process executor:
no worker outlives it, and the resumed run gives the uninterrupted run's bytes. Also: executors
give identical bytes, and a second driver on a live run is refused."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dtda import cli

from .faultkit import HERE, TIMEOUT_S, digests, dtda, every_file, write_config

STAGES = ("train", "attribute", "statistics", "report")
# Events per stage in a run of the faults config (3 seeds): member records; shard and samples
# records; statistics and summary; the report. The process executor's driver renames no member.
EVENTS = {"train": 3, "attribute": 4, "statistics": 2, "report": 1}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_then_resume(tmp_path: Path, executor: str, stage: str, hook: str, n: int, resume_with: str = "") -> Path:
    """Run the faults config under ``_killer.py`` until it kills itself at (hook, stage, n), check no
    descendant survives it, resume (with ``resume_with``, else the same executor) and return the run."""
    config, out, pids = write_config(tmp_path / "c.toml", executor), tmp_path / "run", tmp_path / "pids.json"
    env = {**os.environ, "FAULT_HOOK": hook, "FAULT_STAGE": stage, "FAULT_N": str(n), "FAULT_PIDS": str(pids)}
    killed = dtda("run", str(config), "--out", str(out), "--quiet", env=env, script=str(HERE / "_killer.py"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    children = json.loads(pids.read_text())
    if executor == "process" and stage in ("train", "attribute"):
        assert children, "the pool's workers should have been running"
    deadline = time.monotonic() + 30  # the watchdog polls every 0.5 s; the death signal is immediate
    while any(alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in children if alive(p)], "processes outlived the killed driver"
    assert cli.main(["run", str(out), "--quiet"] + (["--executor", resume_with] if resume_with else [])) == 0
    return out


def test_process_workers_die_with_the_killed_driver_and_a_local_resume_is_identical(tmp_path, reference):
    """Killed after two seeds came back from the pool, resumed with the local executor: the seeds of
    both executors make the all-local run's bytes."""
    out = kill_then_resume(tmp_path, "process", "attribute", "record", 2, resume_with="local")
    assert digests(out) == digests(reference)
    assert cli.main(["verify", str(out)]) == 0


def test_kill_while_renaming_the_report_leaves_a_temporary_that_the_resume_removes(tmp_path, reference, capsys):
    out = kill_then_resume(tmp_path, "local", "report", "replace", 1)
    assert "temporary file(s) left by an interrupted run: .report." in capsys.readouterr().err
    assert every_file(out) == every_file(reference)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "process"])
@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_at_a_seeded_point_then_resume_is_identical(tmp_path, reference, executor, stage):
    rng = random.Random(f"{executor}-{stage}")
    hook = "record" if (executor == "process" and stage == "train") else rng.choice(["record", "replace"])
    n = rng.randint(1, EVENTS[stage] if hook == "record" else {"attribute": 4}.get(stage, EVENTS[stage]))
    out = kill_then_resume(tmp_path, executor, stage, hook, n)
    assert digests(out) == digests(reference)
    for seed in range(3):
        for name in (f"members/{seed}/member.safetensors", f"shards/{seed}.safetensors"):
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert cli.main(["verify", str(out)]) == 0


def test_local_and_process_executors_give_identical_bytes(tmp_path, reference):
    """Every seed task runs with train.threads torch threads, whichever executor runs it."""
    out = tmp_path / "run"
    assert cli.main(["run", str(write_config(tmp_path / "c.toml", "process")), "--out", str(out), "--quiet"]) == 0
    files, expected = every_file(out), every_file(reference)
    assert files.keys() == expected.keys()
    # config.toml names the executor (and the manifest holds its sha256); every result is the same
    assert [k for k in files if files[k] != expected[k]] == ["config.toml", "manifest.json"]


def test_a_second_driver_is_refused_while_the_first_lives_then_takes_over_its_stale_lock(run_copy, capsys):
    lock = run_copy / ".lock"
    holder = subprocess.Popen(  # another driver: holds the lock as dtda.rundir.lock does
        [sys.executable, "-c", ("import fcntl, os, sys, time\n"
                                f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
                                "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'%d\\n' % os.getpid())\n"
                                "print('locked', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = every_file(run_copy)
        capsys.readouterr()
        assert cli.main(["run", str(run_copy), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is in use by another dtda process (pid {holder.pid})" in err
        assert every_file(run_copy) == before
    finally:
        holder.kill()
        holder.wait(timeout=TIMEOUT_S)
    assert cli.main(["run", str(run_copy), "--quiet"]) == 0  # the holder died: its lock is stale
    assert f"taking over the lock of process {holder.pid}, which is no longer running" in capsys.readouterr().err
    assert not lock.exists()  # released at the end


@pytest.mark.parametrize("prctl", [True, False], ids=["death-signal", "watchdog-only"])
def test_a_bound_worker_ends_when_its_parent_is_killed(prctl):
    """:func:`exit_with_parent` alone (its watchdog without prctl, as on other systems) ends the worker."""
    grandchild = ("import os, sys, time\n"
                  "from dtda.train.workers import exit_with_parent\n"
                  + ("" if prctl else "sys.platform = 'other'\n")
                  + "exit_with_parent(os.getppid()); print('bound', flush=True); time.sleep(120)")
    parent = subprocess.Popen(
        [sys.executable, "-c", ("import subprocess, sys, time\n"
                                f"worker = subprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
                                "print(worker.pid, flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "bound"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=TIMEOUT_S)
        deadline = time.monotonic() + 30
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(worker)
    finally:
        parent.kill()
