"""scripts/gpu_checks.py, the prepared run for a session lent a GPU, checked here on CPU
(`--cpu` swaps trainer=gpu/ddp and --device cuda for their CPU counterparts): its commands run
and its judges read what they wrote, so a lent session's few minutes are not spent on a typo.
What only a GPU can show (CUDA kernels, GradScaler, NCCL) stays for that session."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import DATA_DIR, script


def test_the_checks_and_their_commands(capsys) -> None:
    checks = script("gpu_checks")
    assert [c.name for c in checks.CHECKS] == ["env", "gpu_fp32", "gpu_16mixed", "gpu_bf16_log",
                                               "bench_gpu", "ddp"]
    checks.main(["--dry-run"])
    printed = capsys.readouterr().out
    assert "trainer=gpu trainer.precision=16-mixed" in printed and "--device cuda" in printed
    cpu = [checks.on_cpu(c) for c in checks.CHECKS]
    flat = [a for c in cpu for a in c.argv]
    assert "trainer=gpu" not in flat and "cuda" not in flat and "trainer=ddp_cpu" in flat


def test_a_failed_check_is_reported_with_its_output(tmp_path) -> None:
    checks = script("gpu_checks")
    fails = checks.Check("boom", "exits 3", [sys.executable, "-c",
                                             "print('the output'); raise SystemExit(3)"])
    unjudged = checks.Check("nofile", "writes nothing", [sys.executable, "-c", "pass"],
                            checks.judge_fp32)
    passes = checks.Check("fine", "exits 0", [sys.executable, "-c", "pass"])
    results = checks.main(["--out", str(tmp_path)], [fails, unjudged, passes])
    assert [(r["name"], r["passed"], r["rc"]) for r in results] == [
        ("boom", False, 3), ("nofile", False, 0), ("fine", True, 0)]
    assert results[1]["detail"].startswith("could not judge: FileNotFoundError")
    report = (tmp_path / "gpu_checks.md").read_text()
    assert "| boom | exits 3 | **no** |" in report and "the output" in report
    assert json.loads((tmp_path / "gpu_checks.json").read_text()) == results
    # past the budget the rest are skipped, and say so
    skipped = checks.main(["--out", str(tmp_path), "--budget-s", "10"], [passes])
    assert skipped[0]["detail"] == "skipped: out of time" and not skipped[0]["passed"]


@pytest.mark.slow
def test_the_checks_run_and_pass_on_cpu(tmp_path) -> None:
    checks = script("gpu_checks")
    results = checks.main(["--cpu", "--out", str(tmp_path), "--data", str(DATA_DIR), "--only",
                           "env", "gpu_fp32", "gpu_16mixed", "gpu_bf16_log", "ddp"])
    assert [r["name"] for r in results] == ["env", "gpu_fp32", "gpu_16mixed", "gpu_bf16_log",
                                            "ddp"]
    assert all(r["passed"] for r in results), [(r["name"], r["detail"], r["tail"])
                                               for r in results if not r["passed"]]
    by_name = {r["name"]: r["detail"] for r in results}
    assert "equal to the monitor's: True" in by_name["gpu_16mixed"]
    assert by_name["gpu_bf16_log"].split()[0] == by_name["gpu_bf16_log"].split()[2]  # all steps


@pytest.mark.parametrize(("name", "typo", "meant"), [("gpu_checks", "gpu_fp23", "gpu_fp32"),
                                                     ("bench", "framwork", "framework")])
def test_an_unknown_check_or_benchmark_name_is_an_error_with_a_did_you_mean(
        capsys, name: str, typo: str, meant: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        script(name).main(["--only", typo])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"'{typo}' is not one of" in err and f"Did you mean '{meant}'?" in err
