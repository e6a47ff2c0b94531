"""A rich progress bar that redraws every `refresh_rate` batches.

Lightning 2.x's `RichProgressBar` reads `refresh_rate` only as on/off: it updates the bar, gathers
the progress-bar metrics and re-renders on every batch (~0.2 ms of Python per training step on
the default MLP, ~3% of the step). This subclass forwards a batch-end hook only every
`refresh_rate`-th batch and on the first and last batch of each loop, so the bar and its metrics are
never more than `refresh_rate - 1` batches behind and always exact at the end of an epoch.
`refresh_rate: 0` turns the bar off, as in Lightning.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import RichProgressBar


def due(batch_idx: int, total: float, every: int) -> bool:
    """Whether batch `batch_idx` (0-based) of `total` batches is a redraw batch: the first
    (so rich can estimate the speed), every `every`-th and the last."""
    done = batch_idx + 1
    return every <= 1 or done % every == 0 or done >= total or done == 1


class ThrottledRichProgressBar(RichProgressBar):
    """`RichProgressBar` whose batch-end updates run every `refresh_rate` batches."""

    def _due(self, batch_idx: int, total: str) -> bool:
        """`due` for the loop whose batch count is the property `total` (read only when the
        bar is on: Lightning sets up its counters only then)."""
        return self.is_enabled and due(batch_idx, getattr(self, total), int(self.refresh_rate))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._due(batch_idx, "total_train_batches"):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self._due(batch_idx, "total_val_batches_current_dataloader"):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx,
                                            dataloader_idx)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                          outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        if self._due(batch_idx, "total_test_batches_current_dataloader"):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx,
                                      dataloader_idx)
