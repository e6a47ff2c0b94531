"""MultiTaskModule: a shared trunk, one head per task, per-task losses combined by a weighting
strategy (losslab.multitask.weighting).

    h = trunk(x);  out_k = head_k(h);  L_k = mean_i loss_k(out_k, y_k)_i
    total = weighting(L_1..L_K)     e.g. uncertainty: sum_k c_k e^{-s_k} L_k + 1/2 s_k

Logged: train/loss (the weighted total), multitask/loss/<task>, multitask/weight/<task>
(effective weight) and, for uncertainty, multitask/sigma/<task> = exp(s_k / 2), every step (they
reach the loggers on logging steps and metrics.json at the end); per split
<split>/<task>/{acc | rmse, mae}, <split>/<task>/loss and <split>/loss = sum_k L_k.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import (
    MeanAbsoluteError,
    MeanSquaredError,
    MetricCollection,
)
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy

from losslab.errors import UserError
from losslab.multitask.weighting import Weighting, build_weighting
from losslab.tasks.metrics import best_metric, eval_loss_metric, metric_inputs
from losslab.tasks.step_logging import TrainScalars, is_logging_step
from losslab.tasks.supervised import SupervisedTask, needs_graph_closure

SPLITS = ("train", "val", "test")


def task_metrics(kind: str, num_classes: int | None, prefix: str) -> MetricCollection:
    """acc (classification) or rmse + mae (regression)."""
    if kind == "regression":
        return MetricCollection({"rmse": MeanSquaredError(squared=False),
                                 "mae": MeanAbsoluteError()}, prefix=prefix)
    acc = BinaryAccuracy() if num_classes == 2 else \
        MulticlassAccuracy(int(num_classes or 2), average="micro")
    return MetricCollection({"acc": acc}, prefix=prefix)


def head_units(loss: nn.Module, kind: str, num_classes: int | None) -> int:
    """Output units of a task head (same rule as run.output_dim for single-task runs)."""
    if kind == "regression":
        return int(getattr(loss, "output_units", None) or
                   getattr(loss, "outputs_per_sample", None) or 1)
    if num_classes == 2 and getattr(loss, "accepts_single_logit", False):
        return 1
    return int(num_classes or 2)


def last_linear(module: nn.Module) -> nn.Linear:
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise UserError("multitask: the trunk has no Linear layer (GradNorm needs one).")
    return layers[-1]


class MultiTaskModule(SupervisedTask):
    """Shared trunk + heads + weighting. Subclasses SupervisedTask only for its checkpoint,
    gradient-clipping and step-guard hooks; its own state is set up here."""

    def __init__(self, trunk: nn.Module, heads: dict[str, nn.Module],
                 losses: dict[str, nn.Module], tasks: Sequence[Any], weighting: Weighting,
                 optim: dict[str, Any], scheduler: dict[str, Any], monitor: str = "val/loss",
                 monitor_mode: str = "min", config: dict[str, Any] | None = None) -> None:
        L.LightningModule.__init__(self)
        self.save_hyperparameters({"optim": optim, "scheduler": scheduler, "monitor": monitor,
                                   "monitor_mode": monitor_mode, "config": config})
        self.trunk, self.heads = trunk, nn.ModuleDict(heads)
        self.losses = nn.ModuleDict(losses)
        for loss in self.losses.values():
            loss.reduction = "none"
        self.tasks = list(tasks)
        self.names = [t.name for t in self.tasks]
        self.weighting = weighting
        self.train_scalars = TrainScalars()
        self._last_step: tuple[Tensor, Tensor] | None = None
        for split in SPLITS:  # train_metrics[task], ... (ModuleDict keys cannot be "train")
            setattr(self, f"{split}_metrics", nn.ModuleDict({
                t.name: task_metrics(t.kind, t.num_classes, f"{split}/{t.name}/")
                for t in self.tasks}))
        # NaN batch losses make the epoch's loss NaN; the best value skips NaN epochs
        self.val_losses = nn.ModuleDict({t.name: eval_loss_metric() for t in self.tasks})
        self.test_losses = nn.ModuleDict({t.name: eval_loss_metric() for t in self.tasks})
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.val_best = best_metric(self.monitor_mode)
        self.register_buffer("_epoch_loss_sum", torch.zeros(len(self.tasks)), persistent=False)
        self.register_buffer("_epoch_steps", torch.zeros(()), persistent=False)
        self.sample_weight_fn = None
        self.kind = "multitask"
        if needs_graph_closure(optim.get("name")):
            raise UserError(f"optimizer '{optim.get('name')}' is not supported for multi-task "
                            "runs; use adam, adamw, sgd, ...")
        self.automatic_optimization = True
        self._shared = last_linear(trunk).weight if weighting.needs_shared_grads else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.trunk(x)
        return {name: head(h) for name, head in self.heads.items()}

    def _task_losses(self, out: dict[str, Tensor], y: Tensor) -> Tensor:
        """[K] mean per-sample loss of each task."""
        return torch.stack([self.losses[t.name](out[t.name], self._target(y, k)).mean()
                            for k, t in enumerate(self.tasks)])

    def _target(self, y: Tensor, k: int) -> Tensor:
        return y[:, k].long() if self.tasks[k].kind == "classification" else y[:, k]

    def _update_metrics(self, split: str, out: dict[str, Tensor], y: Tensor) -> None:
        for k, t in enumerate(self.tasks):
            pred = out[t.name].detach()
            point = getattr(self.losses[t.name], "point_prediction", None)
            if t.kind == "regression" and point is not None:
                pred = point(pred)
            metrics = getattr(self, f"{split}_metrics")[t.name]
            metrics.update(metric_inputs(t.kind, t.num_classes, pred), self._target(y, k))

    # -- training -----------------------------------------------------------------------------
    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x, y, _ = batch
        out = self(x)
        losses = self._task_losses(out, y)
        total, weights = self.weighting.combine(losses, self._shared)
        self._epoch_loss_sum += losses.detach()
        self._epoch_steps += 1
        self.train_scalars.add(self, {"train/loss": total}, prog_bar=("train/loss",))
        self._last_step = (losses.detach(), weights.detach())
        if is_logging_step(self):  # per-task values: logging steps (and the epoch's last step)
            self._log_task_values(on_step=True)
        self._update_metrics("train", out, y)
        return total

    def _log_task_values(self, on_step: bool) -> None:
        """multitask/loss/<task>, multitask/weight/<task> of the latest step, and the
        weighting's own values (sigma, ...)."""
        if self._last_step is None:
            return
        losses, weights = self._last_step
        values = {f"multitask/loss/{name}": losses[k] for k, name in enumerate(self.names)}
        values.update({f"multitask/weight/{name}": weights[k]
                       for k, name in enumerate(self.names)})
        values.update({f"multitask/{k}": v for k, v in self.weighting.extra_logs().items()})
        for key, value in values.items():
            self.log(key, value, on_step=on_step, on_epoch=not on_step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.weighting.after_step()

    def on_train_epoch_end(self) -> None:
        self.train_scalars.epoch_end(self)
        self._log_task_values(on_step=False)
        mean = self._epoch_loss_sum / self._epoch_steps.clamp_min(1)
        if self.trainer.world_size > 1:
            mean = self.trainer.strategy.reduce(mean, reduce_op="mean")
        self.weighting.end_epoch(mean)
        self._epoch_loss_sum.zero_()
        self._epoch_steps.zero_()
        for coll in self.train_metrics.values():
            self.log_dict(coll.compute(), sync_dist=True)
            coll.reset()

    def on_train_end(self) -> None:
        """Under DDP, each rank writes its learned weighting values to
        `<run>/ddp/multitask_rank<r>.json` (they must agree: DDP all-reduces their gradients)."""
        if self.trainer.world_size > 1:
            import json
            from pathlib import Path

            values = {name: p.detach().cpu().tolist()
                      for name, p in self.weighting.named_parameters()}
            values.update({f"multitask/{k}": float(v)
                           for k, v in self.weighting.extra_logs().items()})
            folder = Path(self.trainer.default_root_dir) / "ddp"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"multitask_rank{self.trainer.global_rank}.json").write_text(
                json.dumps(values, indent=2))

    # -- evaluation ---------------------------------------------------------------------------
    def _eval_step(self, split: str, batch: tuple[Tensor, ...]) -> None:
        x, y, _ = batch
        out = self(x)
        for k, t in enumerate(self.tasks):
            getattr(self, f"{split}_losses")[t.name].update(self.losses[t.name](out[t.name],
                                                                       self._target(y, k)))
        self._update_metrics(split, out, y)

    def _epoch_values(self, split: str) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        total = 0.0
        for t in self.tasks:
            values.update(getattr(self, f"{split}_metrics")[t.name].compute())
            getattr(self, f"{split}_metrics")[t.name].reset()
            loss = getattr(self, f"{split}_losses")[t.name].compute()
            getattr(self, f"{split}_losses")[t.name].reset()
            values[f"{split}/{t.name}/loss"] = loss
            total = total + loss
        values[f"{split}/loss"] = total
        return values

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_validation_epoch_end(self) -> None:
        values = self._epoch_values("val")
        if not self.trainer.sanity_checking:
            self.log_validation(values)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self._epoch_values("test"), sync_dist=True)

    # -- optimisation -------------------------------------------------------------------------
    def logged_metric_names(self) -> list[str]:
        names = ["train/loss", "val/loss", f"{self.monitor}_best"]
        for t in self.tasks:
            names.append(f"val/{t.name}/loss")
            for split in ("train", "val"):
                coll = getattr(self, f"{split}_metrics")[t.name]
                names += [f"{coll.prefix}{k}" for k in coll.keys(keep_base=True)]
        return sorted(set(names))

    def configure_optimizers(self) -> Any:
        """One optimizer over trunk, heads and the weighting's learned parameters (1-D, so the
        no-decay rule applies; give them their own lr with `optim.lr_scales={weighting.*: 10}`)."""
        from losslab.optim import configure, describe_param_groups

        holder = nn.ModuleDict({"trunk": self.trunk, "heads": self.heads,
                                "weighting": self.weighting})
        out = configure(holder, dict(self.hparams.optim), dict(self.hparams.scheduler),
                        steps_per_run=int(self.trainer.estimated_stepping_batches),
                        epochs=int(self.trainer.max_epochs or 1))
        rank_zero_info(describe_param_groups(out["optimizer"].param_groups))
        return out


def check_task_losses(tasks: Sequence[Any], losses: dict[str, Any] | None, data: str) -> None:
    """Every data task has exactly one configured loss, and every loss names a data task."""
    names = [t.name for t in tasks]
    losses = losses or {}
    missing = [n for n in names if not losses.get(n)]
    unknown = [n for n in losses if n not in names]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"task(s) {', '.join(missing)} have no loss")
        if unknown:
            parts.append(f"loss(es) for {', '.join(unknown)} name no task of the data")
        raise UserError(f"data '{data}': {'; '.join(parts)}. The data's tasks are "
                        f"{', '.join(names)}; set one loss per task under data.losses, e.g. "
                        f"data.losses.{names[0]}={{name: mse}}.")


def build_multitask_task(cfg: Any, dm: Any) -> MultiTaskModule:
    """The MultiTaskModule for a multi-task data module `dm` and the composed config."""
    from losslab.builders import build, to_dict
    from losslab.losses import LOSSES
    from losslab.models import MODELS

    tasks = dm.tasks
    data_name = str(cfg.data.get("name", "?"))
    loss_cfgs = to_dict(cfg.data.get("losses"))
    check_task_losses(tasks, loss_cfgs, data_name)
    losses = {}
    for t in tasks:
        loss_cfg = loss_cfgs[t.name]
        if isinstance(loss_cfg, str):
            loss_cfg = {"name": loss_cfg}
        loss = build(LOSSES, loss_cfg, drop=("reduction",))
        if loss.kind != t.kind:
            raise UserError(f"data '{data_name}': task '{t.name}' is {t.kind}, but its loss "
                            f"'{loss_cfg.get('name')}' is a {loss.kind} loss.")
        if getattr(loss, "binary_only", False) and (t.num_classes or 0) > 2:
            raise UserError(f"data '{data_name}': task '{t.name}' has {t.num_classes} classes; "
                            f"loss '{loss_cfg.get('name')}' is binary only. Use ce.")
        losses[t.name] = loss
    trunk = build(MODELS, cfg.model, input_shape=dm.info.input_shape, out_dim=1)
    head = getattr(trunk, "head", None)
    if not isinstance(head, nn.Linear):
        raise UserError(f"model '{cfg.model.get('name')}': a multi-task trunk needs a model "
                        "with a final Linear `head` (mlp, cnn1d, cnn2d).")
    width = head.in_features
    trunk.head = nn.Identity()
    heads = {t.name: nn.Linear(width, head_units(losses[t.name], t.kind, t.num_classes))
             for t in tasks}
    weighting = build_weighting(to_dict(cfg.get("multitask")), [t.name for t in tasks],
                                [t.kind for t in tasks])
    return MultiTaskModule(trunk, heads, losses, tasks, weighting, optim=to_dict(cfg.optim),
                           scheduler=to_dict(cfg.scheduler), monitor=str(cfg.optimized_metric),
                           monitor_mode=str(cfg.optimized_mode), config=to_dict(cfg))
