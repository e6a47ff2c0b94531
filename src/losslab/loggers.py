"""Loggers: Lightning's TensorBoard logger, without a disk flush or a file append per metric.

Lightning calls `logger.save()` after every `log_metrics` (every `log_every_n_steps` steps).
`TensorBoardLogger.save()` flushes the SummaryWriter, which waits until TensorBoard's writer
thread has written every queued event, and checks the file system for hparams.yaml: a step
that logs then waits for the disk, which at `log_every_n_steps=1` undoes the writer thread's
point. Here `save()` does that at most every `flush_every_s` seconds (default 5: a live
TensorBoard is at most that far behind) and always at the end (`finalize`), so nothing logged is
lost and the files are complete when the run ends.

`log_metrics` makes ONE event of a call's scalars (Lightning's makes one per metric, and
TensorBoard's writer thread opens, appends to and closes the event file for each: ~0.1 ms of
that thread's CPU, holding the GIL, per metric; three per step at `log_every_n_steps=1` in the
default run, the training loss, the epoch and the learning rate). A call only records the
values (and the time); they are serialized together and reach the writer thread as one item
when `save()` flushes (so also at most `flush_every_s` behind), when 256 calls are pending,
and at `finalize`. The gradient callbacks' scalars (`log_rows`, via
`losslab.callbacks.tensorboard.log_scalar_runs`) wait with them. TensorBoard's record
checksums run in C (`use_fast_tensorboard_crc`) where google-crc32c is installed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from losslab.callbacks.tensorboard import scalar_records, use_fast_tensorboard_crc, write_records
from losslab.errors import check_range

#: pending `log_metrics` calls that make the logger write them before the next flush
MAX_PENDING = 256


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger whose `save()` (flush) runs at most every `flush_every_s`
    seconds, writing each `log_metrics` call as one event, queued in batches (see the module
    docstring); `finalize` always writes, flushes and closes."""

    def __init__(self, *args: Any, flush_every_s: float = 5.0, **kwargs: Any) -> None:
        check_range("logger.tensorboard", "flush_every_s", flush_every_s, low=0)
        super().__init__(*args, **kwargs)
        self.flush_every_s = float(flush_every_s)
        self._last_save = -math.inf
        #: (tags, step, wall time, values) of each `log_metrics` call not yet written
        self._pending: list[tuple[tuple[str, ...], int, float, list[float]]] = []
        use_fast_tensorboard_crc()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """The scalars of `metrics` as one event at `step` (pending until the next write);
        a dict value is a group of runs (`add_scalars`), as in Lightning's logger."""
        metrics = self._add_prefix(metrics)
        tags: list[str] = []
        values: list[float] = []
        for key, value in metrics.items():
            if isinstance(value, dict):
                self.experiment.add_scalars(key, value, step)
                continue
            try:
                values.append(float(value.item() if isinstance(value, Tensor) else value))
            except (TypeError, ValueError, RuntimeError) as error:
                raise ValueError(f"logger.tensorboard: cannot log metric {key!r} = {value!r}: "
                                 "log a number, a one-element tensor or a dict of them."
                                 ) from error
            tags.append(key)
        if tags:  # serialized in `write_pending`, with the others (warm code, one loop)
            self._pending.append((tuple(tags), int(step or 0), time.time(), values))
            if len(self._pending) >= MAX_PENDING:
                self.write_pending()

    def log_rows(self, tags: tuple[str, ...], rows: list[tuple[int, list[float]]]) -> None:
        """Several steps' values of the same `tags` (floats), pending like `log_metrics` calls
        (what the gradient callbacks write through `log_scalar_runs`; the prefix applies)."""
        if self._prefix:
            tags = tuple(f"{self._prefix}{self.LOGGER_JOIN_CHAR}{k}" for k in tags)
        now = time.time()
        self._pending += [(tags, step, now, values) for step, values in rows]
        if len(self._pending) >= MAX_PENDING:
            self.write_pending()

    def _add_prefix(self, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self._prefix:
            return metrics
        return {f"{self._prefix}{self.LOGGER_JOIN_CHAR}{k}": v for k, v in metrics.items()}

    def write_pending(self) -> None:
        """The pending scalars as events (one per `log_metrics` call, stamped when it was
        made), handed to TensorBoard's writer thread as one queue item."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        experiment = self.experiment
        records: list[bytes] = []
        event_writer = None
        for tags, step, wall_time, values in pending:
            made = scalar_records(experiment, tags, [(step, values)], [wall_time])
            if made is None:  # not TensorBoard's own writer: one add_scalar per value
                for key, value in zip(tags, values, strict=True):
                    experiment.add_scalar(key, value, step, walltime=wall_time)
                continue
            event_writer, serialized = made
            records += serialized
        if records:
            write_records(event_writer, records)

    def save(self) -> None:
        now = time.monotonic()
        if now - self._last_save < self.flush_every_s:
            return
        self._last_save = now
        self.write_pending()
        super().save()

    def finalize(self, status: str) -> None:
        self.write_pending()
        self._last_save = -math.inf  # the final save always happens
        super().finalize(status)
        self._last_save = -math.inf
