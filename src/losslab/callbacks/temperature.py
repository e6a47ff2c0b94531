"""Anneal the temperature of a loss (ce, kl) over training.

T(t) for progress t = step / total_steps in [0, 1]:
linear: T0 + (T1 - T0) t;  exponential: T0 (T1 / T0)^t;  cosine: T1 + (T0 - T1)(1 + cos(pi t)) / 2.
"""

from __future__ import annotations

import math

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback

from losslab.errors import UserError, check_choice, check_range


def temperature_at(progress: float, start: float, end: float, schedule: str) -> float:
    """The annealed temperature at `progress` in [0, 1]."""
    t = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * t
    if schedule == "exponential":
        return start * (end / start) ** t
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


class TemperatureAnnealing(Callback):
    """Sets `loss.temperature` before every training step and logs `train/temperature`."""

    def __init__(self, start: float = 4.0, end: float = 1.0, schedule: str = "cosine") -> None:
        check_range("callbacks.temperature", "start", start, low=0, low_inclusive=False)
        check_range("callbacks.temperature", "end", end, low=0, low_inclusive=False)
        check_choice("callbacks.temperature", "schedule", schedule,
                     ("linear", "exponential", "cosine"))
        self.start, self.end, self.schedule = float(start), float(end), schedule

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = getattr(pl_module, "loss_fn", None)
        if loss is None or not hasattr(loss, "temperature"):
            name = getattr(type(loss), "registry_name", type(loss).__name__)
            raise UserError(f"callbacks.temperature anneals a loss temperature, but loss "
                            f"'{name}' has none. Use loss=ce or loss=kl.")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: object, batch_idx: int) -> None:
        total = max(int(trainer.estimated_stepping_batches), 1)
        value = temperature_at(trainer.global_step / total, self.start, self.end, self.schedule)
        pl_module.loss_fn.temperature = value
        pl_module.log("train/temperature", value, on_step=True, on_epoch=False)
