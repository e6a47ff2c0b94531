"""The sharpness callback: opt-in, logs top eigenvalue and trace on schedule, validates config."""

from __future__ import annotations

import csv
import math

import pytest

from losslab.callbacks.sharpness import Sharpness
from losslab.errors import UserError
from losslab.run import train


def test_not_in_the_default_callbacks(make_cfg) -> None:
    assert "sharpness" not in make_cfg().callbacks


def test_logs_every_n_epochs_and_at_the_last_epoch(make_cfg, tmp_path) -> None:
    cfg = make_cfg("debug=limit", "logger=csv", "test=false", "trainer.max_epochs=3",
                   "callbacks=[default,sharpness]", "callbacks.rich_progress_bar=null",
                   "callbacks.rich_model_summary=null", "callbacks.sharpness.every_n_epochs=2",
                   "callbacks.sharpness.iterations=8", "callbacks.sharpness.trace_probes=3",
                   "model.hidden=[32,32]", "data.batch_size=50")
    train(cfg)
    with open(tmp_path / "run" / "csv" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("sharpness/top_eigenvalue")]
    assert [int(r["step"]) for r in rows] == [10, 15]  # end of epoch 2 and of the last (3rd)
    for r in rows:
        assert float(r["sharpness/top_eigenvalue"]) > 0
        assert math.isfinite(float(r["sharpness/hessian_trace"]))
        assert float(r["sharpness/seconds"]) > 0


def test_invalid_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="'every_n_epochs' must be a positive integer"):
        Sharpness(every_n_epochs=0)
    with pytest.raises(UserError, match="'method' must be one of 'lanczos', 'power'"):
        Sharpness(method="arnoldi")
    with pytest.raises(UserError, match="'trace_probes'"):
        Sharpness(trace_probes=-1)
