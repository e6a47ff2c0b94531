"""The command line as a user types it (subprocesses of train.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from losslab.cli import check_overrides, config_groups, group_options
from losslab.errors import UserError
from tests.conftest import DATA_DIR, ROOT

QUIET = ["callbacks.rich_progress_bar=null", "callbacks.rich_model_summary=null",
         f"paths.data_dir={DATA_DIR}"]


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_every_group_has_options():
    groups = config_groups()
    for g in ["data", "model", "loss", "optim", "scheduler", "trainer", "callbacks", "logger",
              "paths", "experiment", "hparams_search", "debug"]:
        assert g in groups and group_options(g), g


def test_check_overrides_suggests():
    check_overrides(["loss=focal", "optim=sgd,adam", "trainer.max_epochs=3", "-m"])
    with pytest.raises(UserError, match=r"Unknown optim 'adamm'.*Did you mean 'adam'"):
        check_overrides(["optim=sgd,adamm"])


def test_unknown_loss_exits_nonzero_without_traceback():
    res = run_cli("loss=focall")
    assert res.returncode == 2
    assert "Unknown loss 'focall'" in res.stderr and "Did you mean 'focal'" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_user_error_inside_the_job_exits_nonzero_without_traceback(tmp_path):
    res = run_cli("loss=mse", "debug=fast_dev_run", f"hydra.run.dir={tmp_path}", *QUIET)
    assert res.returncode == 2
    assert "loss 'mse' is a regression loss" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


@pytest.mark.slow
def test_single_run_from_the_command_line(tmp_path):
    res = run_cli("debug=limit", f"hydra.run.dir={tmp_path}", *QUIET)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"test/acc", "test/loss", "val/acc", "val/acc_best", "perf/fit_seconds"} <= set(metrics)
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert "losslab: final metrics" in res.stdout
    # no warning raised from losslab's own code in a healthy default run
    assert not re.search(r"losslab/\S+\.py:\d+: \w*Warning", res.stderr), res.stderr[-2000:]


@pytest.mark.slow
def test_multirun_two_jobs(tmp_path):
    res = run_cli("-m", "loss=ce,focal", "debug=limit", f"hydra.sweep.dir={tmp_path}", *QUIET)
    assert res.returncode == 0, res.stderr[-2000:]
    jobs = sorted(p for p in Path(tmp_path).iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, loss in zip(jobs, ["ce", "focal"], strict=True):
        assert json.loads((job / "metrics.json").read_text())["test/acc"] > 0
        assert f"name: {loss}" in (job / ".hydra" / "config.yaml").read_text()
    assert res.stdout.count("val/acc (best) =") == 2


def test_start_up_runs_without_the_garbage_collector_then_freezes_it(tmp_path):
    """train.py pauses the cyclic collector for the start-up (losslab.startup); by the first
    training step it is back on, with the start-up's objects frozen out of its scans; and the
    default run gets there without executing scipy.signal, matplotlib.axes or .pyplot
    (imported by torchmetrics), and
    with one Hydra composition instead of two (losslab.compose_once)."""
    marker = tmp_path / "first_step.json"
    res = run_cli("test=false", f"hydra.run.dir={tmp_path / 'run'}", *QUIET,
                  "+callbacks.first_step._target_=losslab.callbacks.timing.FirstStepTimer",
                  f"+callbacks.first_step.path={marker}")
    assert res.returncode == 0, res.stderr[-2000:]
    state = json.loads(marker.read_text())
    assert state["gc_enabled"] is True
    assert state["gc_frozen"] > 100_000  # torch + Lightning + Hydra: ~700,000 here
    assert state["deferred"] == ["matplotlib.axes", "matplotlib.pyplot", "scipy.signal"]
    assert state["compositions_reused"] == 1


def test_start_up_measures_can_be_turned_off(tmp_path):
    """LOSSLAB_GC_PAUSE=0: the start-up keeps the collector on and freezes nothing;
    LOSSLAB_DEFER_IMPORTS=0: nothing is deferred; LOSSLAB_COMPOSE_ONCE=0: Hydra composes twice."""
    marker = tmp_path / "first_step.json"
    res = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "test=false", f"hydra.run.dir={tmp_path / 'run'}",
         *QUIET, "+callbacks.first_step._target_=losslab.callbacks.timing.FirstStepTimer",
         f"+callbacks.first_step.path={marker}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "LOSSLAB_GC_PAUSE": "0", "LOSSLAB_DEFER_IMPORTS": "0",
             "LOSSLAB_COMPOSE_ONCE": "0"})
    assert res.returncode == 0, res.stderr[-2000:]
    state = json.loads(marker.read_text())
    assert state["gc_enabled"] is True and state["gc_frozen"] == 0
    assert state["deferred"] == []
    assert state["compositions_reused"] == 0


def test_gc_pause_and_resume_only_undo_their_own_pause():
    """pause_gc/resume_gc in a fresh interpreter: resume freezes and re-enables only after a
    pause made by pause_gc (a collector the user turned off stays off)."""
    code = """
import gc
from losslab.startup import gc_paused, pause_gc, resume_gc
resume_gc(); assert gc.isenabled() and gc.get_freeze_count() == 0   # nothing to undo
pause_gc(); assert not gc.isenabled() and gc_paused()
pause_gc(); assert gc_paused()                                      # idempotent
resume_gc(); assert gc.isenabled() and not gc_paused() and gc.get_freeze_count() > 0
gc.unfreeze(); gc.disable()                                         # the user's choice
pause_gc(); resume_gc(); assert not gc.isenabled() and gc.get_freeze_count() == 0
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_multirun_jobs_train_with_the_collector_on(tmp_path):
    """A multirun with the basic launcher: the first job resumes the collector after its
    imports; every job's first step runs with it on and the start-up objects frozen."""
    res = run_cli("-m", "seed=1,2", "test=false", f"hydra.sweep.dir={tmp_path}", *QUIET,
                  "+callbacks.first_step._target_=losslab.callbacks.timing.FirstStepTimer",
                  "+callbacks.first_step.path=${hydra:runtime.output_dir}/first_step.json")
    assert res.returncode == 0, res.stderr[-2000:]
    for job in ("0", "1"):
        state = json.loads((tmp_path / job / "first_step.json").read_text())
        assert state["gc_enabled"] is True and state["gc_frozen"] > 100_000, job


def test_sweep_start_callback_resumes_the_collector_for_out_of_process_launchers():
    """ResumeGcAtSweepStart (conf/hydra/default.yaml) undoes train.py's pause in the main
    process when the jobs run elsewhere (joblib), and leaves it to the first job when they
    run in this process (Hydra's basic launcher)."""
    code = """
import gc
from omegaconf import OmegaConf
from losslab.startup import gc_paused, pause_gc
from losslab.sweeps.startup_gc import ResumeGcAtSweepStart
def config(target):
    return OmegaConf.create({"hydra": {"launcher": {"_target_": target}}})
pause_gc()
basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
ResumeGcAtSweepStart().on_multirun_start(config=config(basic))
assert gc_paused() and not gc.isenabled()
joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
ResumeGcAtSweepStart().on_multirun_start(config=config(joblib))
assert gc.isenabled() and gc.get_freeze_count() > 0
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_a_job_failing_before_training_turns_the_collector_back_on(tmp_path):
    """losslab.cli.main pauses the collector; a job that stops with a user error before
    training (so before losslab.run.train resumes it) resumes it in its error path."""
    code = f"""
import gc, sys
from losslab.cli import main
sys.argv = ["train.py", "loss=mse", "hydra.run.dir={tmp_path}", *{QUIET!r}]
try:
    main()
except SystemExit as e:
    print(e.code, gc.isenabled(), gc.get_freeze_count() > 100_000)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert "loss 'mse' is a regression loss" in res.stderr, res.stderr[-2000:]
    assert res.stdout.split()[-3:] == ["2", "True", "True"], res.stdout[-2000:]
