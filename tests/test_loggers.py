"""losslab's TensorBoardLogger: throttled flushes, complete files at the end."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from losslab.errors import UserError
from losslab.loggers import TensorBoardLogger


def test_save_flushes_at_most_every_interval(tmp_path: Path, monkeypatch) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="", flush_every_s=3600)
    flushes = []
    monkeypatch.setattr(logger.experiment, "flush", lambda: flushes.append(1))
    for step in range(5):
        logger.log_metrics({"x": float(step)}, step)
        logger.save()
    assert len(flushes) == 1  # the first save; the next four fall inside the interval
    assert (tmp_path / "tb" / "hparams.yaml").exists()
    monkeypatch.undo()
    logger.finalize("success")  # always flushes (and closes)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("x")] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_zero_interval_flushes_every_time(tmp_path: Path, monkeypatch) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="", flush_every_s=0)
    flushes = []
    monkeypatch.setattr(logger.experiment, "flush", lambda: flushes.append(1))
    for _ in range(3):
        logger.save()
    assert len(flushes) == 3


def test_negative_interval_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="flush_every_s"):
        TensorBoardLogger(str(tmp_path), flush_every_s=-1)
