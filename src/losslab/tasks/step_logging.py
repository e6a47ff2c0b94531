"""Per-step training scalars, logged without Lightning's per-step bookkeeping.

`self.log(name, v, on_step=True, on_epoch=True)` costs Lightning about 0.3-1 ms per call and
step on CPU (its result collection tracks, converts and syncs every value), which on a small
model is a tenth of the step. `TrainScalars` gives the same names and values at a fraction of
the cost:

* every step, `v` is added to a running sum on the device (no host sync) and a Python counter;
* on logging steps (Lightning's own `log_every_n_steps` decision) `<name>_step` = v is logged
  through `self.log`, so loggers and the progress bar see it as before;
* at epoch end `<name>_epoch` = sum / count (the epoch mean over steps, reduced over DDP ranks)
  is logged, and `<name>` with the same value for monitors (`scheduler.monitor=train/loss`).

`add_epoch_only` keeps a weighted running mean logged once per epoch: the training accuracy
(or MAE) is the batch value weighted by the batch size, exact over the epoch, at ~15 us per step
instead of ~150-300 us for a torchmetrics update (evaluation splits keep torchmetrics).
"""

from __future__ import annotations

import lightning.pytorch as L
import torch
from torch import Tensor


def is_logging_step(module: L.LightningModule) -> bool:
    """True when Lightning sends step metrics to the loggers at this training step: its own
    rule, (batches that stepped + 1) % log_every_n_steps == 0 (or the run is stopping)."""
    trainer = module._trainer
    if trainer is None:
        return False
    every = trainer.log_every_n_steps
    stepped = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_batches_that_stepped", None)
    if stepped is None or not every:  # another Lightning version: ask it (slower)
        connector = getattr(trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))
    return (stepped + 1) % every == 0 or trainer.should_stop


class TrainScalars:
    """Running device sums of named training scalars; see the module docstring."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self.prog_bar: set[str] = set()
        self.epoch_only: set[str] = set()

    def add(self, module: L.LightningModule, values: dict[str, Tensor],
            prog_bar: tuple[str, ...] = ()) -> None:
        """Record this step's values (0-d tensors); log them when it is a logging step."""
        logging = is_logging_step(module)
        for name, value in values.items():
            v = value.detach()
            self._accumulate(name, v, 1)
            if logging:
                module.log(f"{name}_step", v, on_step=True, on_epoch=False,
                           prog_bar=name in prog_bar)
        self.prog_bar.update(prog_bar)

    def add_epoch_only(self, name: str, value: Tensor, weight: int) -> None:
        """A value logged once per epoch as `name`: sum(value * weight) / sum(weight) (e.g. a
        batch's accuracy weighted by its size gives the exact epoch accuracy)."""
        self._accumulate(name, value.detach() * weight, weight, epoch_only=True)

    def _accumulate(self, name: str, value: Tensor, weight: int, epoch_only: bool = False) -> None:
        total = self.sums.get(name)
        if total is None:
            self.sums[name] = value.to(torch.float32, copy=True)
            self.counts[name] = weight
            if epoch_only:
                self.epoch_only.add(name)
        else:
            total.add_(value)
            self.counts[name] += weight

    def epoch_end(self, module: L.LightningModule) -> dict[str, Tensor]:
        """Log (and return) the epoch means, then start the next epoch from zero."""
        means = {name: total / self.counts[name] for name, total in self.sums.items()}
        for name, mean in means.items():
            if name in self.epoch_only:
                module.log(name, mean, sync_dist=True)
                continue
            module.log(f"{name}_epoch", mean, sync_dist=True, prog_bar=name in self.prog_bar)
            module.log(name, mean, sync_dist=True, logger=False)
        self.sums, self.counts = {}, {}
        return means
