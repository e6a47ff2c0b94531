"""Sharpness: the Hessian's top eigenvalue and trace of the training loss, every N epochs.

At the end of every `every_n_epochs`-th training epoch (and of the last one) it logs

* ``sharpness/top_eigenvalue``   lambda_max of the Hessian of the mean training loss (Lanczos with
  `iterations` Hessian-vector products)
* ``sharpness/hessian_trace``    Hutchinson's tr(H) from `trace_probes` Rademacher probes
* ``sharpness/seconds``          what the evaluation cost

on a fixed set of training samples (the first `num_batches` x batch_size of the training split,
the same every time, so the curve shows the weights changing, not the data), with the model in
eval mode (dropout off) and the data loss only (no L1/L2 terms). Opt-in:

    python train.py +callbacks/sharpness=sharpness callbacks.sharpness.every_n_epochs=5

Cost: about (iterations + trace_probes) gradient evaluations x 2-3 per evaluation (see
scripts/bench_sharpness.py). Only global rank zero computes and logs.
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from losslab.callbacks.tensorboard import log_scalars
from losslab.diagnostics.hessian import sharpness
from losslab.errors import UserError, check_choice


class Sharpness(Callback):
    """Logs the top Hessian eigenvalue and the Hessian trace every `every_n_epochs` epochs."""

    def __init__(self, every_n_epochs: int = 5, num_batches: int = 1, iterations: int = 20,
                 trace_probes: int = 10, method: str = "lanczos", seed: int = 0) -> None:
        owner = "callback 'sharpness'"
        for key, value in (("every_n_epochs", every_n_epochs), ("num_batches", num_batches),
                           ("iterations", iterations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{owner}: '{key}' must be a positive integer, got {value!r}.")
        if isinstance(trace_probes, bool) or not isinstance(trace_probes, int) or trace_probes < 0:
            raise UserError(f"{owner}: 'trace_probes' must be an integer >= 0 (0: no trace), "
                            f"got {trace_probes!r}.")
        check_choice(owner, "method", method, ("lanczos", "power"))
        self.every_n_epochs, self.num_batches = every_n_epochs, num_batches
        self.iterations, self.trace_probes = iterations, trace_probes
        self.method, self.seed = method, int(seed)
        self.history: list[dict[str, float]] = []
        self._batch: tuple[Tensor, Tensor] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, "loss_fn") or not hasattr(pl_module, "model"):
            raise UserError("callback 'sharpness' needs a single-task run (a task with `model` "
                            "and `loss_fn`); remove +callbacks/sharpness for multi-task data.")

    def fixed_batch(self, trainer: L.Trainer) -> tuple[Tensor, Tensor]:
        """The first num_batches x batch_size training samples (taken once, then reused)."""
        if self._batch is None:
            dm = trainer.datamodule
            splits = getattr(dm, "splits", None)
            if splits and "train" in splits:
                x, y = splits["train"]
                n = self.num_batches * int(getattr(dm, "batch_size", len(y)))
                self._batch = (x[:n], y[:n])
            else:
                xs, ys = [], []
                for i, batch in enumerate(trainer.train_dataloader):
                    if i >= self.num_batches:
                        break
                    xs.append(batch[0])
                    ys.append(batch[1])
                self._batch = (torch.cat(xs), torch.cat(ys))
        return self._batch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        last = (trainer.max_epochs or 0) > 0 and epoch >= trainer.max_epochs
        if (epoch % self.every_n_epochs and not last) or not trainer.is_global_zero:
            return
        self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: L.Trainer, pl_module: Any) -> dict[str, float]:
        """Compute, remember and log the values at the current weights."""
        x, y = self.fixed_batch(trainer)
        x, y = x.to(pl_module.device), y.to(pl_module.device)
        start = time.perf_counter()
        values = sharpness(pl_module.model, pl_module.loss_fn, x, y, self.iterations,
                           self.trace_probes, self.method, self.seed)
        seconds = time.perf_counter() - start
        record = {"epoch": float(trainer.current_epoch), "step": float(trainer.global_step),
                  "top_eigenvalue": values["top_eigenvalue"], "seconds": seconds}
        logged = {"sharpness/top_eigenvalue": values["top_eigenvalue"],
                  "sharpness/seconds": seconds}
        if self.trace_probes:
            record["hessian_trace"] = values["hessian_trace"]
            logged["sharpness/hessian_trace"] = values["hessian_trace"]
        self.history.append(record)
        log_scalars(trainer, logged, trainer.global_step)
        return record
