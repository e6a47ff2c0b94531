"""Multiruns from the command line (subprocesses of train.py): a 2x2 grid, a failing job, 3-fold
cross-validation, an Optuna study resumed, and DDP jobs inside a multirun."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import DATA_DIR, ROOT

QUIET = ["callbacks.rich_progress_bar=null", "callbacks.rich_model_summary=null",
         f"paths.data_dir={DATA_DIR}"]
TINY = ["debug=limit", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", *QUIET]

pytestmark = pytest.mark.slow


def sweep(folder: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *args, *TINY,
                           f"hydra.sweep.dir={folder}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def jobs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def summary_rows(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "summary.csv").open()))


def session_hparams(job: Path) -> set[str]:
    """Hyperparameter names of the job's TensorBoard HParams session."""
    acc = EventAccumulator(str(job / "tensorboard"))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    return set(data.session_start_info.hparams)


def test_grid_two_by_two(tmp_path: Path):
    res = sweep(tmp_path, "loss=ce,focal", "optim=sgd,adam")
    assert res.returncode == 0, res.stderr[-3000:]
    assert [p.name for p in jobs(tmp_path)] == ["0", "1", "2", "3"]
    for job in jobs(tmp_path):
        assert "test/acc" in json.loads((job / "metrics.json").read_text())
        assert {"loss", "optim", "trainer.max_epochs"} <= session_hparams(job)  # overrides too
    rows = summary_rows(tmp_path)
    assert [(r["loss"], r["optim"], r["status"]) for r in rows] == [
        ("ce", "sgd", "ok"), ("ce", "adam", "ok"), ("focal", "sgd", "ok"), ("focal", "adam", "ok")]
    md = (tmp_path / "summary.md").read_text()
    assert "4 jobs: 4 ok, 0 failed." in md and "| job | loss | optim | status |" in md
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert "sweep summary: 4 jobs, 0 failed" in res.stderr


def test_a_failing_job_is_recorded_and_the_sweep_exits_nonzero(tmp_path: Path):
    res = sweep(tmp_path, "loss=focal", "loss.gamma=1,-1")
    assert res.returncode == 3, res.stderr[-3000:]
    ok, bad = jobs(tmp_path)
    assert "test/acc" in json.loads((ok / "metrics.json").read_text())
    assert not (bad / "metrics.json").exists()
    error = json.loads((bad / "error.json").read_text())["error"]
    assert "'gamma' must be in [0, inf), got -1" in error
    rows = summary_rows(tmp_path)
    assert [(r["loss.gamma"], r["status"]) for r in rows] == [("1", "ok"), ("-1", "failed")]
    assert rows[1]["error"] == error
    assert "1 of 2 sweep jobs failed" in res.stderr


def test_three_fold_cross_validation(tmp_path: Path):
    res = sweep(tmp_path, "data.num_folds=3", "data.fold=range(0,3)")
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(jobs(tmp_path)) == 3
    rows = summary_rows(tmp_path)
    assert [r["data.fold"] for r in rows] == ["0", "1", "2"]
    assert all(r["status"] == "ok" and r["test/acc"] for r in rows)
    md = (tmp_path / "summary.md").read_text()
    assert "## Mean ± std over data.fold" in md and "| 3/3 |" in md and " ± " in md


def test_optuna_study_in_the_sweep_folder_resumes(tmp_path: Path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    res = sweep(tmp_path, "hparams_search=mnist1d_optuna", "hydra.sweeper.n_trials=4")
    assert res.returncode == 0, res.stderr[-3000:]
    first = (tmp_path / "0" / "metrics.json").read_text()
    # resume with 2 more trials, both failing (gamma < 0): recorded, not fatal to the study
    res = sweep(tmp_path, "hparams_search=mnist1d_optuna", "hydra.sweeper.n_trials=2",
                "loss.gamma=interval(-3,-1)")
    assert res.returncode == 3, res.stderr[-3000:]
    study = optuna.load_study(study_name="mnist1d_mlp_focal", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4, 5]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4 + ["FAIL"] * 2
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 6  # the resumed sampler does not repeat the first points
    assert [p.name for p in jobs(tmp_path)] == ["0", "1", "2", "3", "4", "5"]
    assert (tmp_path / "0" / "metrics.json").read_text() == first  # not overwritten
    rows = summary_rows(tmp_path)
    assert [r["status"] for r in rows] == ["ok"] * 4 + ["failed"] * 2
    assert "'gamma' must be in [0, inf)" in rows[5]["error"]
    assert float(rows[3]["optim.lr"]) == pytest.approx(study.trials[3].params["optim.lr"])


def test_ddp_jobs_in_a_multirun_train_every_rank_in_the_job_folder(tmp_path: Path):
    res = sweep(tmp_path, "loss=ce,focal", "trainer=ddp_cpu", timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [p.name for p in jobs(tmp_path)] == ["0", "1"]  # no sweep of a child rank
    for job, loss in zip(jobs(tmp_path), ["ce", "focal"], strict=True):
        ranks = [json.loads((job / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert [r["global_rank"] for r in ranks] == [0, 1]
        assert ranks[0]["pid"] != ranks[1]["pid"]
        assert ranks[0]["config_sha256"] == ranks[1]["config_sha256"], ranks
        assert ranks[0]["overrides"] == ranks[1]["overrides"], ranks
        assert f"loss={loss}" in ranks[1]["overrides"] and ranks[1]["loss"]["name"] == loss
        assert ranks[0]["output_dir"] == ranks[1]["output_dir"] == str(job.resolve())
        assert "test/acc" in json.loads((job / "metrics.json").read_text())
        assert (job / "train_ddp_rank1.log").is_file()
    assert [r["status"] for r in summary_rows(tmp_path)] == ["ok", "ok"], \
        (tmp_path / "summary.md").read_text()
