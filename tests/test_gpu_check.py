"""``benchmarks/gpu_check.py``'s correctness pass on CPU backends, so that the rare GPU session
meets the kernels' problems, not the script's: every case builds valid inputs, the comparison
accepts a correct backend and rejects a wrong one, and the summary table prints."""

from __future__ import annotations

import argparse

import pytest
import torch

from benchmarks import gpu_check

CHECKS = [(op, i) for op in gpu_check.OPS for i in range(len(gpu_check.CASES[op]))]


def _task(op: str, index: int, backend: str, dtype: str) -> dict:
    return dict(id=f"check/{op}/{backend}/{dtype}/{index}", kind="check", op=op, backend=backend, dtype=dtype,
                case=gpu_check.CASES[op][index], index=index, device="cpu")


@pytest.mark.parametrize(("op", "index"), CHECKS, ids=[f"{op}-{i}" for op, i in CHECKS])
def test_every_check_case_passes_on_the_cpp_backend(op, index):
    for dtype in ("float32", "float64"):
        result = gpu_check._check(_task(op, index, "cpp", dtype))
        assert result["status"] == "PASS", result


def test_a_wrong_result_fails_the_comparison():
    ref64 = torch.randn(5, 4, dtype=torch.float64)
    ref32 = ref64.float()
    ok, *_ = gpu_check._compare("kron_apply", ref32, ref32, ref64, torch.float32)
    assert ok
    wrong = ref32.clone()
    wrong[2, 1] += 1e-3
    ok, err, bound, detail = gpu_check._compare("kron_apply", wrong, ref32, ref64, torch.float32)
    assert not ok and err > bound and "max error" in detail
    unwritten = ref32.clone()
    unwritten[0, 0] = float("nan")
    assert not gpu_check._compare("kron_apply", unwritten, ref32, ref64, torch.float32)[0]


def test_summary_prints_the_tables(capsys):
    tasks = gpu_check.make_tasks(["ghost_dot"], quick=True)
    done = {t["id"]: {"id": t["id"], "status": "PASS", "err": 0.0, "bound": 1.0} for t in tasks if t["kind"] == "check"}
    for t in tasks:
        if t["kind"] == "time":
            done[t["id"]] = {"id": t["id"], "status": "TIME", "ms": 2.0 if t["backend"] == "torch" else 1.0,
                             "flops": 1e9, "bytes": 1e6}
    done["ceilings"] = {"id": "ceilings", "status": "INFO", "mm_fp32_tflops": 50.0, "mm_bf16_tflops": 700.0,
                        "copy_gbs": 3000.0}
    report = gpu_check.summary(tasks, done, [], argparse.Namespace(quick=True))
    out = capsys.readouterr().out
    assert "ALL CHECKS PASSED" in out and report["failures"] == 0
    assert any(r["backend"] == "cuda" and r["vs_torch"] == 2.0 for r in report["timings"])


def test_end_to_end_influence_check_runs_and_compares(monkeypatch):
    from benchmarks import gpu_influence

    result = gpu_influence.influence_check("cpu", seeds=2, n_train=200, epochs=1)
    assert result["status"] == "PASS" and result["max_abs_err"] == 0.0  # the same device: the same bits
    assert "PASS" in gpu_influence.describe(result)
    monkeypatch.setattr(gpu_influence, "influence_check", lambda device: 1 / 0)
    failed = gpu_check.end_to_end_influence("cpu")
    assert failed["status"] == "FAIL" and "ZeroDivisionError" in failed["detail"]
