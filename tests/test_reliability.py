"""Reproducibility, exact resume, interruption and checkpoint safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from losslab.run import train
from tests.conftest import DATA_DIR, ROOT

SHORT = ["debug=limit", "trainer.max_epochs=3", "trainer.deterministic=true",
         "callbacks.model_checkpoint.save_top_k=-1"]


def without_perf(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("perf/fit")}


def test_same_seed_same_metrics(make_cfg, tmp_path):
    a = train(make_cfg(*SHORT, f"paths.output_dir={tmp_path / 'a'}"))
    b = train(make_cfg(*SHORT, f"paths.output_dir={tmp_path / 'b'}"))
    assert without_perf(a) == without_perf(b)
    ja = json.loads((tmp_path / "a" / "metrics.json").read_text())
    jb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert without_perf(ja) == without_perf(jb)
    c = train(make_cfg(*SHORT, "seed=7", f"paths.output_dir={tmp_path / 'c'}"))
    assert without_perf(c) != without_perf(a)


def test_resume_from_epoch_boundary_is_exact(make_cfg, tmp_path):
    full = train(make_cfg(*SHORT, f"paths.output_dir={tmp_path / 'full'}"))
    ckpt = tmp_path / "full" / "checkpoints" / "best-epoch000.ckpt"
    assert ckpt.is_file()
    resumed = train(make_cfg(*SHORT, f"ckpt_path={ckpt}",
                             f"paths.output_dir={tmp_path / 'resumed'}"))
    for key in ("test/acc", "test/loss", "val/acc", "val/loss", "perf/train_steps"):
        assert resumed[key] == full[key], key


def test_provenance_records_versions_and_command(make_cfg, tmp_path):
    train(make_cfg("debug=fast_dev_run"))
    info = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert info["versions"]["torch"] and info["versions"]["lightning"]
    assert info["seed"] == 42 and "argv" in info


def test_ckpt_path_last_picks_this_runs_checkpoint(make_cfg, tmp_path):
    train(make_cfg("debug=limit", "trainer.max_epochs=1"))
    metrics = train(make_cfg("debug=limit", "trainer.max_epochs=2", "ckpt_path=last"))
    assert metrics["perf/train_steps"] == 10  # continued from step 5


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_last_checkpoint(tmp_path, sig):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run}",
         f"paths.data_dir={DATA_DIR}", "trainer.max_epochs=500", "callbacks.rich_progress_bar=null",
         "callbacks.rich_model_summary=null", "trainer.check_val_every_n_epoch=1000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tb = run / "tensorboard"
    deadline = time.time() + 120
    while time.time() < deadline and not list(tb.glob("events.out.tfevents.*")):
        time.sleep(0.5)
    time.sleep(3.0)  # some training steps
    os.kill(proc.pid, sig)
    out, _ = proc.communicate(timeout=120)
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file(), out[-3000:]
    state = torch.load(last, weights_only=False)
    assert state["global_step"] > 0
    assert not list((run / "checkpoints").glob("*.tmp"))
