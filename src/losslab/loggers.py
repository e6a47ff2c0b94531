"""Loggers: Lightning's TensorBoard logger, without a disk flush on every logging step.

Lightning calls `logger.save()` after every `log_metrics` (every `log_every_n_steps` steps).
`TensorBoardLogger.save()` flushes the SummaryWriter, which waits until TensorBoard's writer
thread has written every queued event, and checks the file system for hparams.yaml: a step
that logs then waits for the disk, which at `log_every_n_steps=1` undoes the writer thread's
point. Here `save()` does that at most every `flush_every_s` seconds (default 5: a live
TensorBoard is at most that far behind) and always at the end (`finalize`), so nothing logged is
lost and the files are complete when the run ends.
"""

from __future__ import annotations

import math
import time
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger

from losslab.errors import check_range


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger whose `save()` (flush) runs at most every `flush_every_s`
    seconds; `finalize` always flushes and closes."""

    def __init__(self, *args: Any, flush_every_s: float = 5.0, **kwargs: Any) -> None:
        check_range("logger.tensorboard", "flush_every_s", flush_every_s, low=0)
        super().__init__(*args, **kwargs)
        self.flush_every_s = float(flush_every_s)
        self._last_save = -math.inf

    def save(self) -> None:
        now = time.monotonic()
        if now - self._last_save < self.flush_every_s:
            return
        self._last_save = now
        super().save()

    def finalize(self, status: str) -> None:
        self._last_save = -math.inf  # the final save always happens
        super().finalize(status)
        self._last_save = -math.inf
