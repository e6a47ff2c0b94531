"""The TensorBoard writers callbacks share: reused scalar events and the fast histogram."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from losslab.callbacks.tensorboard import histogram_stats, log_histogram, log_scalars


def read(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_reused_scalar_events_hold_each_calls_values(tmp_path: Path) -> None:
    tb = TensorBoardLogger(str(tmp_path), name="tb", version="")
    csv = CSVLogger(str(tmp_path), name="csv", version="")
    trainer = SimpleNamespace(is_global_zero=True, loggers=[tb, csv])
    for step in range(6):  # two tag sets, alternating: each event is refilled, not shared
        log_scalars(trainer, {"a": step * 1.0, "b": torch.tensor(step * 2.0)}, step)
        if step % 2:
            log_scalars(trainer, {"c": -step * 1.0}, step)
    tb.experiment.flush()
    csv.save()
    acc = read(tmp_path / "tb")
    assert [(e.step, e.value) for e in acc.Scalars("a")] == [(s, s * 1.0) for s in range(6)]
    assert [(e.step, e.value) for e in acc.Scalars("b")] == [(s, s * 2.0) for s in range(6)]
    assert [(e.step, e.value) for e in acc.Scalars("c")] == [(1, -1.0), (3, -3.0), (5, -5.0)]
    assert len((tmp_path / "csv" / "metrics.csv").read_text().splitlines()) > 6
    # other ranks write nothing
    log_scalars(SimpleNamespace(is_global_zero=False, loggers=[tb]), {"a": 99.0}, 99)
    tb.experiment.flush()
    assert 99 not in [e.step for e in read(tmp_path / "tb").Scalars("a")]


@pytest.mark.parametrize("bins", [1, 7, 64])
def test_histogram_stats_equal_numpy(bins: int) -> None:
    x = torch.randn(10_001, generator=torch.Generator().manual_seed(0)) * 3 + 1
    stats = histogram_stats(x, bins)
    assert stats is not None
    counts, edges = np.histogram(x.double().numpy(), bins=bins)
    assert stats["num"] == 10_001 and sum(stats["bucket_counts"]) == 10_001
    # the same buckets as numpy's, up to values that round onto an edge
    assert np.abs(np.array(stats["bucket_counts"]) - counts).sum() <= 2
    np.testing.assert_allclose(stats["bucket_limits"], edges[1:], rtol=1e-6)
    assert stats["min"] == pytest.approx(float(x.min())) and stats["max"] == float(x.max())
    assert stats["sum"] == pytest.approx(float(x.double().sum()), rel=1e-5)
    assert stats["sum_squares"] == pytest.approx(float(x.double().square().sum()), rel=1e-5)


def test_histogram_edge_cases(tmp_path: Path) -> None:
    constant = histogram_stats(torch.full((5,), 2.5))
    assert constant is not None
    assert constant["bucket_counts"] == [5] and constant["bucket_limits"] == [2.5]
    assert histogram_stats(torch.tensor([1.0, float("nan")])) is None
    assert histogram_stats(torch.tensor([1.0, float("inf")])) is None
    assert histogram_stats(torch.empty(0)) is None
    tb = TensorBoardLogger(str(tmp_path), name="tb", version="")
    assert log_histogram(tb.experiment, "h", torch.arange(100.0), 3, bins=10)
    assert not log_histogram(tb.experiment, "bad", torch.tensor([float("nan")]), 3)
    tb.experiment.flush()
    acc = read(tmp_path / "tb")
    (event,) = acc.Histograms("h")
    assert event.step == 3 and event.histogram_value.num == 100
    assert event.histogram_value.bucket == [10.0] * 10
    assert "bad" not in acc.Tags()["histograms"]


def test_scalar_rows_share_one_lookup_and_keep_step_order(tmp_path: Path) -> None:
    from losslab.callbacks.tensorboard import log_scalar_rows

    tb = TensorBoardLogger(str(tmp_path), name="tb", version="")
    csv = CSVLogger(str(tmp_path), name="csv", version="")
    trainer = SimpleNamespace(is_global_zero=True, loggers=[tb, csv])
    log_scalar_rows(trainer, ("a", "b"), [(s, [float(s), -float(s)]) for s in range(4)])
    tb.experiment.flush()
    csv.save()
    acc = read(tmp_path / "tb")
    assert [(e.step, e.value) for e in acc.Scalars("b")] == [(s, -float(s)) for s in range(4)]
    assert "a" in (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]


def test_monitor_writes_every_step_in_order(make_cfg, tmp_path: Path) -> None:
    """Steps with update ratios (more tags) in between keep grad/norm_total in step order, so
    TensorBoard never sees a step go back (it would drop the later ones as orphaned)."""
    from losslab.run import train

    cfg = make_cfg("debug=limit", "test=false", "trainer.log_every_n_steps=1",
                   "callbacks.grad_monitor.update_ratio_every_n_steps=3")
    train(cfg)
    acc = read(tmp_path / "run" / "tensorboard")
    steps = [e.step for e in acc.Scalars("grad/norm_total")]
    assert steps == list(range(len(steps))) and len(steps) >= 6
    ratio_steps = [e.step for e in acc.Scalars("grad/update_ratio/model.head")]
    assert ratio_steps and all((s + 1) % 3 == 0 for s in ratio_steps)


def test_framed_records_equal_tensorboards_framing() -> None:
    import io

    from tensorboard.summary.writer.record_writer import RecordWriter

    from losslab.callbacks.tensorboard import frame_records

    records = [b"", b"x", bytes(range(256)) * 3]
    expected = io.BytesIO()
    for data in records:
        RecordWriter(expected).write(data)  # bytes, not FramedRecords: framed by TensorBoard
    assert frame_records(records) == expected.getvalue()


def test_scalar_runs_are_one_queue_item_and_read_back_in_order(tmp_path: Path) -> None:
    from losslab.callbacks.tensorboard import log_scalar_runs

    tb = TensorBoardLogger(str(tmp_path), name="tb", version="")
    trainer = SimpleNamespace(is_global_zero=True, loggers=[tb])
    async_writer = tb.experiment._get_file_writer().event_writer._async_writer
    items: list[bytes] = []
    original = async_writer.write
    async_writer.write = lambda data: (items.append(data), original(data))
    runs = [(("a",), [(s, [float(s)]) for s in range(4)]),
            (("a", "r"), [(4, [4.0, 0.5])]),
            (("a",), [(s, [float(s)]) for s in range(5, 9)])]
    log_scalar_runs(trainer, runs)
    assert len(items) == 1  # nine events, one item for the writer thread
    tb.experiment.flush()
    acc = read(tmp_path / "tb")  # TensorBoard's reader checks every record's CRCs
    assert [(e.step, e.value) for e in acc.Scalars("a")] == [(s, float(s)) for s in range(9)]
    assert [(e.step, e.value) for e in acc.Scalars("r")] == [(4, 0.5)]


def test_other_record_writers_get_one_event_each() -> None:
    """A queue whose consumer is not TensorBoard's RecordWriter (tensorboardX's, say) never gets
    pre-framed records: each event goes through add_event and is framed once, by that writer."""
    from tensorboard.compat.proto.event_pb2 import Event

    from losslab.callbacks.tensorboard import FramedRecords, write_records

    queued: list[bytes] = []
    added: list[Event] = []
    async_writer = SimpleNamespace(_writer=object(), write=queued.append)
    event_writer = SimpleNamespace(_async_writer=async_writer, add_event=added.append)
    records = [Event(step=s).SerializeToString() for s in range(3)]
    write_records(event_writer, records)
    assert not any(type(q) is FramedRecords for q in queued)
    assert [e.step for e in added] == [0, 1, 2]
