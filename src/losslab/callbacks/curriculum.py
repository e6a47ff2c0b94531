"""Curriculum: the Lightning callback that applies `curriculum_weights` to training.

It attaches `weights` as the task's `sample_weight_fn` (SupervisedTask.training_step then
minimises mean_i(w_i l_i)), advances the schedule (warmup, epochs for lam, progress t in [0, 1]
after the warmup for the pacing functions) and logs, on logging steps only:
``curriculum/active_fraction`` (fraction of the global batch with w > 0),
``curriculum/threshold`` (lam, the pacing cut-off d_(k), or tau), ``curriculum/fraction`` (p(t),
pacing/anti), ``curriculum/superloss`` (mean SuperLoss value), ``curriculum/noisy_weight_share``
(share of the weight on flipped labels, when the data module has ``noisy_train``); with a
TensorBoard logger a histogram ``curriculum/weights`` (logging steps) and, at each epoch end,
``curriculum/difficulty`` (each sample's difficulty when last seen; split into
``difficulty_noisy`` / ``difficulty_clean`` under label noise).

Config: the ``curriculum`` group (conf/curriculum/*.yaml), e.g. ``python train.py
curriculum=superloss``; `losslab.run.train` adds it to the callbacks.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from losslab.callbacks.curriculum_weights import (
    OWNER,
    PACING_FUNCTIONS,
    STRATEGIES,
    CurriculumWeights,
    keep_threshold,
    lambert_w,
    normalize_weights,
    pacing_fraction,
    self_paced_weights,
    superloss_sigma,
    superloss_value,
)
from losslab.errors import UserError

__all__ = ["PACING_FUNCTIONS", "STRATEGIES", "Curriculum", "CurriculumWeights", "keep_threshold",
           "lambert_w", "normalize_weights", "pacing_fraction", "self_paced_weights",
           "superloss_sigma", "superloss_value"]


class Curriculum(CurriculumWeights, Callback):
    """Per-sample loss weighting by difficulty (strategies and formulas: `curriculum_weights`)."""

    @property
    def state_key(self) -> str:
        return "Curriculum"

    # -- hooks --------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.active:
            return
        if not hasattr(pl_module, "sample_weight_fn"):
            raise UserError(f"{OWNER}: strategy '{self.strategy}' needs a task that supports "
                            f"per-sample weights; {type(pl_module).__name__} has no "
                            "'sample_weight_fn'.")
        loss_fn = getattr(pl_module, "loss_fn", None)
        if getattr(loss_fn, "reduction", None) != "none":
            name = getattr(type(loss_fn), "registry_name", type(loss_fn).__name__)
            raise UserError(f"{OWNER}: strategy '{self.strategy}' weights per-sample losses, "
                            f"but loss '{name}' does not return per-sample values "
                            "(reduction='none'). Use a losslab loss.")
        dm = getattr(trainer, "datamodule", None)
        info = getattr(dm, "info", None)
        sizes = getattr(info, "sizes", None) or {}
        self.num_samples = int(sizes["train"]) if "train" in sizes else None
        if self.num_samples is None and self.difficulty == "ema":
            raise UserError(f"{OWNER}: difficulty 'ema' needs a data module with "
                            "info.sizes['train'] (the losslab data modules have it).")
        noisy = getattr(dm, "noisy_train", None)
        self._noisy = noisy if isinstance(noisy, Tensor) else None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        pl_module.sample_weight_fn = self.weights
        self._checked = False
        if self._noisy is not None:
            self._noisy = self._noisy.to(pl_module.device)
        if self.num_samples is not None and (self.ema is None
                                             or self.ema.numel() != self.num_samples):
            self.ema = None
        self._total_steps = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active and getattr(pl_module, "sample_weight_fn", None) == self.weights:
            pl_module.sample_weight_fn = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.active:
            return
        self.in_warmup = trainer.current_epoch < self.warmup_epochs
        self.curriculum_epoch = max(trainer.current_epoch - self.warmup_epochs, 0)
        if self.epoch_difficulty is not None:
            self.epoch_difficulty.fill_(math.nan)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if not self.active or self.strategy not in ("pacing", "anti"):
            return
        if getattr(self, "_total_steps", None) is None:
            total = float(trainer.estimated_stepping_batches)
            per_epoch = total / max(trainer.max_epochs or 1, 1) if (trainer.max_epochs or 0) > 0 \
                else 0.0
            self._warmup_steps = self.warmup_epochs * per_epoch
            self._total_steps = total if math.isfinite(total) else None
        if self._total_steps is None:
            self.progress = 0.0
            return
        span = max(self._total_steps - self._warmup_steps, 1.0)
        self.progress = min(max((trainer.global_step - self._warmup_steps) / span, 0.0), 1.0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.active or "threshold" not in self.last:
            return
        every = int(trainer.log_every_n_steps or 0)
        if not every or trainer.global_step % every != 0:
            return  # logging steps only: values are read from the device just here
        last = self.last
        log: dict[str, Tensor | float] = {
            "curriculum/active_fraction": last["active_fraction"],
            "curriculum/threshold": last["threshold"]}
        if self.strategy in ("pacing", "anti"):
            log["curriculum/fraction"] = self.current_fraction()
        if "superloss" in last:
            log["curriculum/superloss"] = last["superloss"]
        if self._noisy is not None:
            noisy = self._noisy[last["idx"]]
            w = last["weights"]
            log["curriculum/noisy_weight_share"] = (w * noisy).sum() / w.sum().clamp_min(1e-12)
        for k, v in log.items():
            pl_module.log(k, v.float() if isinstance(v, Tensor) else v, on_step=True,
                          on_epoch=False, batch_size=1)
        if self.histograms and trainer.is_global_zero:
            for writer in _tensorboard_writers(trainer):
                writer.add_histogram("curriculum/weights", last["weights"].float().cpu(),
                                     trainer.global_step)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not (self.active and self.histograms and trainer.is_global_zero) \
                or self.epoch_difficulty is None:
            return
        writers = _tensorboard_writers(trainer)
        if not writers:
            return
        d = self.epoch_difficulty.float().cpu()
        seen = ~torch.isnan(d)
        parts = {"curriculum/difficulty": seen}
        if self._noisy is not None and self._noisy.numel() == d.numel():
            noisy = self._noisy.cpu().bool()
            parts.update({"curriculum/difficulty_noisy": seen & noisy,
                          "curriculum/difficulty_clean": seen & ~noisy})
        for writer in writers:
            for tag, mask in parts.items():
                if mask.any():
                    writer.add_histogram(tag, d[mask], trainer.current_epoch)


def _tensorboard_writers(trainer: L.Trainer) -> list[Any]:
    from lightning.pytorch.loggers import TensorBoardLogger

    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
