"""The three gradient experiments, shortened: what grad_health.json says about each."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from losslab.run import train

QUICK = ["logger=none", "callbacks.lr_monitor=null", "+trainer.limit_val_batches=2",
         "+trainer.limit_test_batches=2"]


def report(run: Path) -> dict[str, Any]:
    return json.loads((run / "grad_health.json").read_text())


def test_vanishing_gradients_names_the_early_layers(make_cfg, tmp_path) -> None:
    train(make_cfg("experiment=vanishing_gradients", "trainer.max_epochs=1", "test=false",
                   *QUICK))
    r = report(tmp_path / "run")
    assert r["summary"]["events"] == {"non_finite": 0, "exploding": 0, "vanishing": 1}
    event = r["events"][0]
    assert event["step"] == 29  # checks every 10 steps (log_every_n_steps), patience 3
    assert event["layers"][:3] == ["model.blocks.0.linear", "model.blocks.1.linear",
                                   "model.blocks.2.linear"]
    assert "model.head" not in event["layers"]
    assert event["values"]["model.blocks.0.linear"] < 1e-7
    assert event["values"]["ratio_first_last"] < 1e-4


def test_healthy_gradients_has_no_events_and_trains(make_cfg, tmp_path) -> None:
    metrics = train(make_cfg("experiment=healthy_gradients", "trainer.max_epochs=2",
                             "test=false", *QUICK))
    r = report(tmp_path / "run")
    assert r["summary"]["events"] == {"non_finite": 0, "exploding": 0, "vanishing": 0}
    assert r["events"] == [] and r["summary"]["checks"] == 7
    assert metrics["val/acc_best"] > 0.2  # chance is 0.1


def test_exploding_gradients_then_non_finite_then_stop(make_cfg, tmp_path) -> None:
    metrics = train(make_cfg("experiment=exploding_gradients", *QUICK))
    r = report(tmp_path / "run")
    summary = r["summary"]
    assert summary["events"]["exploding"] >= 1 and summary["events"]["non_finite"] >= 1
    assert summary["first_event"]["exploding"] < summary["first_event"]["non_finite"]
    first = r["events"][0]
    assert first["kind"] == "exploding" and first["values"]["norm_total"] > 1e4
    assert summary["stopped"] and summary["skipped_steps"] == 50  # max_consecutive_skips
    assert metrics["perf/train_steps"] < 60


def test_exploding_gradients_with_norm_clipping_trains(make_cfg, tmp_path) -> None:
    metrics = train(make_cfg("experiment=exploding_gradients", "callbacks.grad_clip.mode=norm",
                             "trainer.max_epochs=5", *QUICK))
    r = report(tmp_path / "run")
    assert r["summary"]["events"]["non_finite"] == 0 and not r["summary"]["stopped"]
    assert metrics["perf/train_steps"] == 110
    assert math.isfinite(metrics["test/loss"]) and metrics["test/loss"] < 10.0
