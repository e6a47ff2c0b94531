"""ModelCheckpoint that never writes non-finite weights and writes atomically."""

from __future__ import annotations

import os
from weakref import proxy

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn


def weights_are_finite(module: torch.nn.Module) -> bool:
    """One host sync: True when every parameter and buffer is finite."""
    tensors = [t for t in list(module.parameters()) + list(module.buffers())
               if t.is_floating_point()]
    if not tensors:
        return True
    norms = torch._foreach_norm(tensors, 1)
    return bool(torch.isfinite(torch.stack(norms)).all())


class FiniteCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, but a checkpoint is written only when all weights are finite
    (a NaN/Inf model is never saved over a good one), and every file is written to a temporary
    name and renamed into place, so a kill during saving never leaves a truncated file."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(*args, **kwargs)
        self.skipped_non_finite = 0

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if not weights_are_finite(trainer.lightning_module):
            self.skipped_non_finite += 1
            rank_zero_warn(f"Not writing checkpoint {os.path.basename(filepath)} at step "
                           f"{trainer.global_step}: the weights contain NaN or Inf. The last "
                           "good checkpoint is kept.")
            return
        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        trainer.strategy.barrier("FiniteCheckpoint.rename")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
