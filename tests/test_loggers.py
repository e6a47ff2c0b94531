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


def events(folder: Path) -> list:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    files = sorted(folder.glob("events.out.tfevents.*"))
    return [e for f in files for e in EventFileLoader(str(f)).Load() if e.HasField("summary")]


def test_one_event_per_call_held_until_written(tmp_path: Path, monkeypatch) -> None:
    import torch

    from losslab import loggers

    logger = TensorBoardLogger(str(tmp_path), name="tb", version="", flush_every_s=3600,
                               prefix="fit")
    logger.save()  # the first save flushes; the interval then holds the next ones back
    for step in range(3):
        monkeypatch.setattr(loggers.time, "time", lambda step=step: 1000.0 + step)
        logger.log_metrics({"loss": torch.tensor(0.5 * step), "epoch": step // 2, "lr": 1e-3},
                           step)
        logger.save()
    monkeypatch.undo()
    logger.experiment.flush()
    assert events(tmp_path / "tb") == []  # pending in the logger, not lost: see finalize
    logger.log_metrics({"group": {"a": 1.0, "b": 2.0}}, 3)  # a dict: add_scalars, as Lightning
    logger.finalize("success")
    written = events(tmp_path / "tb")
    scalars = [e for e in written if e.summary.value[0].tag.startswith("fit-")]
    assert [e.step for e in scalars] == [0, 1, 2]  # one event per call, in order
    assert [e.wall_time for e in scalars] == [1000.0, 1001.0, 1002.0]  # when it was logged
    for e in scalars:
        values = {v.tag: v.tensor.float_val[0] for v in e.summary.value}  # (the loader's form)
        assert values == pytest.approx({"fit-loss": 0.5 * e.step, "fit-epoch": e.step // 2,
                                        "fit-lr": 1e-3})
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [s.value for s in acc.Scalars("fit-loss")] == [0.0, 0.5, 1.0]
    groups = {p.name for p in (tmp_path / "tb").iterdir() if p.is_dir()}
    assert groups == {"fit-group_a", "fit-group_b"}  # add_scalars' runs


def test_many_pending_events_go_to_the_writer_thread_without_a_save(tmp_path: Path) -> None:
    from losslab import loggers

    logger = TensorBoardLogger(str(tmp_path), name="tb", version="", flush_every_s=3600)
    for step in range(loggers.MAX_PENDING + 5):
        logger.log_metrics({"x": float(step)}, step)
    assert len(logger._pending) == 5  # the first MAX_PENDING were handed over
    logger.experiment.flush()
    assert [e.step for e in events(tmp_path / "tb")] == list(range(loggers.MAX_PENDING))
    logger.finalize("success")
    assert len(events(tmp_path / "tb")) == loggers.MAX_PENDING + 5


def test_a_value_that_is_no_number_is_a_clear_error(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="tb", version="")
    with pytest.raises(ValueError, match="'loss' = 'high'.*one-element tensor"):
        logger.log_metrics({"loss": "high"}, 0)
    import torch

    with pytest.raises(ValueError, match="'loss' = tensor"):
        logger.log_metrics({"loss": torch.ones(2)}, 0)


def test_gradient_rows_wait_with_the_metrics_and_go_out_as_one_item(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from losslab.callbacks.tensorboard import log_scalar_runs, log_scalars

    logger = TensorBoardLogger(str(tmp_path), name="tb", version="", flush_every_s=3600)
    logger.save()
    trainer = SimpleNamespace(is_global_zero=True, loggers=[logger])
    async_writer = logger.experiment._get_file_writer().event_writer._async_writer
    items: list[bytes] = []
    original = async_writer.write
    async_writer.write = lambda data: (items.append(data), original(data))
    for step in range(3):
        logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
    log_scalar_runs(trainer, [(("grad/norm_total", "grad/norm/a"),
                               [(s, [2.0 * s, float(s)]) for s in range(3)])])
    log_scalars(trainer, {"health/skipped_steps": 0.0}, 2)
    assert items == [] and len(logger._pending) == 7  # nothing written yet
    logger.finalize("success")
    assert len(items) == 1  # the seven events, one item for the writer thread
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("grad/norm_total")] == [(0, 0.0), (1, 2.0),
                                                                           (2, 4.0)]
    assert [e.value for e in acc.Scalars("grad/norm/a")] == [0.0, 1.0, 2.0]
    assert [e.step for e in acc.Scalars("train/loss")] == [0, 1, 2]
    assert [e.step for e in acc.Scalars("health/skipped_steps")] == [2]
