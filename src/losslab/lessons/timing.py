"""EpochTimer: wall time and global step at the end of every training epoch (lesson_timing.json).

Added to a run with `+callbacks.epoch_timer._target_=losslab.lessons.timing.EpochTimer`, so the
lessons can report seconds and steps to a target metric from an ordinary `train(cfg)` run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback

OVERRIDE = "+callbacks.epoch_timer._target_=losslab.lessons.timing.EpochTimer"
FILENAME = "lesson_timing.json"


class EpochTimer(Callback):
    """Records {epoch, seconds since fit start, global_step} after each training epoch."""

    def __init__(self) -> None:
        self.start = 0.0
        self.rows: list[dict[str, float]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()
        self.rows = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows.append({"epoch": float(trainer.current_epoch),
                          "seconds": time.perf_counter() - self.start,
                          "step": float(trainer.global_step)})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / FILENAME
            path.write_text(json.dumps(self.rows))


def read(run_dir: Path) -> list[dict[str, Any]]:
    """The rows written by EpochTimer, or [] when the run has none."""
    path = Path(run_dir) / FILENAME
    return json.loads(path.read_text()) if path.is_file() else []
