"""Sweep summary from hand-made job folders: status, one-line errors, divergence, the varying
overrides, mean ± std over folds/seeds, summary.csv / summary.md, report.py."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from losslab.sweeps.aggregate import aggregate, mean_std, varying_keys
from losslab.sweeps.failures import divergence, one_line, write_error
from losslab.sweeps.jobs import collect_jobs
from losslab.sweeps.summary import write_summary
from losslab.sweeps.tables import headline_metrics
from tests.conftest import ROOT


def make_job(sweep: Path, name: str, overrides: list[str], metrics: dict | None,
             error: str | None = None, metric: str = "val/acc") -> Path:
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / ".hydra" / "config.yaml").write_text(
        f"data:\n  monitor:\n    metric: {metric}\noptimized_metric: ${{data.monitor.metric}}\n")
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if error is not None:
        write_error(job, error)
    return job


def metrics(acc: float, loss: float = 0.5, fit: float = 2.0) -> dict[str, float]:
    return {"val/acc_best": acc, "test/acc": acc - 0.1, "test/loss": loss,
            "perf/fit_seconds": fit}


def test_status_errors_and_divergence(tmp_path: Path):
    make_job(tmp_path, "0", ["loss=focal", "loss.gamma=1", "debug=limit"], metrics(0.8))
    make_job(tmp_path, "1", ["loss=focal", "loss.gamma=-1", "debug=limit"], None,
             error="loss 'focal': 'gamma' must be in [0, inf), got -1.")
    make_job(tmp_path, "2", ["loss=focal", "loss.gamma=9", "debug=limit"],
             metrics(0.1, loss=math.nan))
    make_job(tmp_path, "10", ["loss=focal", "loss.gamma=3", "debug=limit"], None)  # killed
    jobs = collect_jobs(tmp_path)
    assert [j.name for j in jobs] == ["0", "1", "2", "10"]  # numeric order
    assert [j.status for j in jobs] == ["ok", "failed", "failed", "failed"]
    assert jobs[1].error == "loss 'focal': 'gamma' must be in [0, inf), got -1."
    assert jobs[2].error == "diverged: test/loss = nan"
    assert "did not finish" in jobs[3].error
    assert varying_keys(jobs) == ["loss.gamma"]
    assert aggregate(jobs, ["test/acc"]) == []  # neither fold nor seed varies

    result = write_summary(tmp_path, curves=False)
    assert len(result.failed) == 3 and result.n_jobs == 4
    md = (tmp_path / "summary.md").read_text()
    assert "4 jobs: 1 ok, 3 failed." in md
    assert "Common overrides: `loss=focal debug=limit`" in md
    assert "| 1 | -1 | failed |" in md and "got -1. |" in md
    assert "Mean ± std" not in md
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "failed", "failed", "failed"]
    assert rows[0]["loss.gamma"] == "1" and float(rows[0]["test/acc"]) == pytest.approx(0.7)
    assert rows[0]["overrides"] == "loss=focal loss.gamma=1 debug=limit"


def test_mean_std_over_folds_grouped_by_the_other_overrides(tmp_path: Path):
    accs = {"ce": [0.70, 0.80, 0.90], "focal": [0.60, 0.62, math.nan]}
    n = 0
    for loss, values in accs.items():
        for fold, acc in enumerate(values):
            make_job(tmp_path, str(n), [f"loss={loss}", f"data.fold={fold}", "data.num_folds=3"],
                     metrics(acc))
            n += 1
    jobs = collect_jobs(tmp_path)
    assert jobs[-1].status == "failed"  # val/acc_best = nan: diverged
    groups = aggregate(jobs, headline_metrics(jobs))
    assert [g.overrides for g in groups] == [{"loss": "ce"}, {"loss": "focal"}]
    mean, std, count = groups[0].stats["val/acc_best"]
    assert (mean, count) == (pytest.approx(0.8), 3) and std == pytest.approx(0.1)
    assert groups[1].n_ok == 2 and groups[1].stats["val/acc_best"][2] == 2
    write_summary(tmp_path, curves=False)
    md = (tmp_path / "summary.md").read_text()
    assert "## Mean ± std over data.fold" in md
    assert "| ce | 3/3 | 0.8000 ± 0.1000 |" in md
    assert "| focal | 2/3 | 0.6100 ± 0.0141 |" in md


def test_helpers():
    assert mean_std([1.0, math.nan, 3.0]) == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert math.isnan(mean_std([5.0])[1]) and mean_std([])[2] == 0
    assert one_line(RuntimeError("boom\nmore")) == "RuntimeError: boom"
    assert divergence({"val/acc_best": 0.5, "train/loss": math.inf}, "val/acc") \
        == "diverged: train/loss = inf"
    assert divergence({"val/acc": 0.5}, "val/acc") is None
    assert divergence({}, "val/acc") is None  # nothing logged (e.g. train=false): no verdict


def test_report_script_writes_the_same_files(tmp_path: Path):
    make_job(tmp_path, "0", ["seed=1"], metrics(0.5))
    make_job(tmp_path, "1", ["seed=2"], metrics(0.7))
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"), str(tmp_path),
                          "--no-curves"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "## Mean ± std over seed" in res.stdout and "0.6000 ± 0.1414" in res.stdout
    assert (tmp_path / "summary.csv").is_file() and (tmp_path / "summary.md").is_file()
    empty = subprocess.run([sys.executable, str(ROOT / "scripts" / "report.py"),
                            str(tmp_path / "0" / ".hydra")], capture_output=True, text=True)
    assert empty.returncode == 2 and "no job folders" in empty.stderr
