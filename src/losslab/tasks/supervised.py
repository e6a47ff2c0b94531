"""SupervisedTask: a LightningModule that wraps a model, a per-sample loss and the optimizer
and scheduler configuration, and logs torchmetrics per split."""

from __future__ import annotations

import inspect
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MeanMetric

from losslab.errors import UserError, did_you_mean
from losslab.optim import OPTIMIZERS
from losslab.tasks.consistency import consistency_term, make_augmentation
from losslab.tasks.knn import embed, knn_accuracy
from losslab.tasks.metrics import best_metric, build_metrics, eval_loss_metric, metric_inputs
from losslab.tasks.rng import collect_rng_states, set_rng_states
from losslab.tasks.step_logging import TrainScalars

_PLAIN_ATTRS = frozenset({"_current_fx_name"})


class SupervisedTask(L.LightningModule):
    """loss = mean_i w_i l_i + l1 sum|W| + l2 sum W^2 (weights of dim >= 2 only).

    `l_i` comes from a losslab loss with reduction="none"; `w_i` = 1 unless a sample-weighting
    callback sets `self.sample_weight_fn` (curriculum). The L2 term is a penalty added to the loss,
    which is not the same as decoupled weight decay (AdamW) for adaptive optimizers.
    """

    def __init__(self, model: nn.Module, loss: nn.Module, kind: str, num_classes: int | None,
                 optim: dict[str, Any], scheduler: dict[str, Any], monitor: str = "val/acc",
                 monitor_mode: str = "max", regularization: dict[str, float] | None = None,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "loss"])
        self.model, self.loss_fn = model, loss
        self.loss_fn.reduction = "none"
        self.kind, self.num_classes = kind, num_classes
        reg = regularization or {}
        self.l1, self.l2 = float(reg.get("l1", 0.0)), float(reg.get("l2", 0.0))
        cons = dict((config or {}).get("task", {}).get("consistency") or {})
        self.consistency_weight = float(cons.pop("weight", 0.0))
        self.augment = make_augmentation(**cons) if self.consistency_weight else None
        # embedding losses are evaluated by k-NN accuracy against the training set instead
        # train/loss (step + epoch) and train/acc or train/mae (epoch): cheap per-step logging
        self.train_scalars = TrainScalars()
        self.val_metrics = build_metrics(kind, num_classes, "val/")
        self.test_metrics = build_metrics(kind, num_classes, "test/")
        self.knn_k = int((config or {}).get("task", {}).get("knn_k", 5))
        # a NaN/Inf batch loss makes the epoch's loss NaN (torchmetrics' default would drop
        # it with a warning and report the mean of the finite batches: a diverging model
        # would look fine); the best value skips NaN epochs
        self.val_loss, self.test_loss = eval_loss_metric(), eval_loss_metric()
        self.monitor, self.monitor_mode = monitor, monitor_mode
        self.val_best = best_metric(monitor_mode)
        self.sample_weight_fn = None  # callable(idx, per_sample_loss) -> weights [N]
        # optimizers that differentiate the closure's graph themselves (natural gradient) need
        # Lightning's manual optimization; everything else uses automatic optimization.
        self.automatic_optimization = not needs_graph_closure(optim.get("name"))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    # -- per-step overhead ----------------------------------------------------------------------
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _cache_signature(cls.training_step)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` twice around every hook call (~50 times a step);
        # nn.Module.__setattr__ checks each value against Parameter/Module/Tensor first.
        if name in _PLAIN_ATTRS:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # -- training -----------------------------------------------------------------------------
    def regularization_terms(self) -> dict[str, Tensor]:
        """L1 and L2 penalties over weight matrices/kernels (biases and norms excluded)."""
        if not (self.l1 or self.l2):
            return {}
        weights = [p for p in self.model.parameters() if p.dim() > 1 and p.requires_grad]
        terms = {}
        if self.l1:
            terms["reg_l1"] = self.l1 * torch.stack(torch._foreach_norm(weights, 1)).sum()
        if self.l2:
            terms["reg_l2"] = self.l2 * torch.stack(torch._foreach_norm(weights, 2)).square().sum()
        return terms

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        if not self.automatic_optimization:
            return self._graph_closure_step(batch)
        return self._objective(batch)[0]

    def _graph_closure_step(self, batch: tuple[Tensor, ...]) -> Tensor:
        """Manual optimization: the optimizer gets a closure returning (loss, outputs)."""
        opt = self.optimizers()
        opt.zero_grad()
        loss = opt.step(closure=lambda: self._objective(batch))
        loss = loss[0] if isinstance(loss, tuple) else loss
        sched = self.lr_schedulers()
        if sched is not None and self.hparams.scheduler.get("interval", "step") == "step":
            sched.step()
        return loss

    def on_train_epoch_start(self) -> None:
        sched = None if self.automatic_optimization else self.lr_schedulers()
        if sched is not None and self.current_epoch > 0 and \
                self.hparams.scheduler.get("interval", "step") == "epoch":
            sched.step()

    def _objective(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """The training loss of one batch (logged) and the model outputs."""
        x, y, idx = batch
        out = self.model(x)
        if self.sample_weight_fn is not None:
            per_sample = self.loss_fn(out, y)
            data_loss = (self.sample_weight_fn(idx, per_sample.detach()) * per_sample).mean()
        else:  # = the per-sample mean, through the built-in's fused reduction
            data_loss = self.loss_fn(out, y, reduction="mean")
        terms = self.regularization_terms()
        if self.augment is not None:
            terms["consistency"] = self.consistency_weight * consistency_term(
                self.model, x, out, self.augment)
        loss = data_loss + sum(terms.values()) if terms else data_loss
        scalars = {"train/loss": loss}
        if terms:
            scalars["train/data_loss"] = data_loss
            scalars.update({f"train/{k}": v for k, v in terms.items()})
        self.train_scalars.add(self, scalars, prog_bar=("train/loss",))
        if self.kind != "embedding":
            name, value = self._train_metric(out.detach(), y)
            self.train_scalars.add_epoch_only(name, value, len(y))
        return loss, out

    def _train_metric(self, out: Tensor, y: Tensor) -> tuple[str, Tensor]:
        """The batch's training accuracy (classification) or MAE (regression)."""
        if self.kind == "regression":
            point = getattr(self.loss_fn, "point_prediction", None)
            pred = point(out) if point is not None else out
            pred = pred.squeeze(-1) if pred.dim() == 2 else pred
            return "train/mae", (pred - y).abs().mean()
        if out.dim() == 1 or out.shape[-1] == 1:
            hit = (out.reshape(-1) > 0) == (y.reshape(-1) > 0.5)
        else:
            hit = out.argmax(-1) == (y.argmax(-1) if y.dim() == 2 else y)  # soft targets
        return "train/acc", hit.float().mean()

    def on_train_epoch_end(self) -> None:
        self.train_scalars.epoch_end(self)

    # -- evaluation ---------------------------------------------------------------------------
    def _eval_step(self, batch: tuple[Tensor, ...], metrics: Any, loss_metric: MeanMetric) -> None:
        x, y, _ = batch
        out = self.model(x)
        per_sample = self.loss_fn(out, y)
        loss_metric.update(per_sample)
        if self.kind != "embedding":
            metrics.update(self._metric_inputs(out), y)

    def _metric_inputs(self, out: Tensor) -> Tensor:
        point = getattr(self.loss_fn, "point_prediction", None)  # quantile / gaussian_nll heads
        if self.kind == "regression" and point is not None:
            out = point(out)
        return metric_inputs(self.kind, self.num_classes, out)

    def _epoch_values(self, split: str, metrics: Any, loss_metric: MeanMetric) -> dict:
        """Computed (and reset) metrics of one evaluation epoch, including the loss."""
        if self.kind == "embedding":
            dm = self.trainer.datamodule
            (xr, yr), (xq, yq) = dm.splits["train"], dm.splits[split]
            values = {f"{split}/acc": knn_accuracy(embed(self.model, xr, self.device), yr,
                                                   embed(self.model, xq, self.device), yq,
                                                   self.knn_k)}
        else:
            values = metrics.compute()
            metrics.reset()
        values[f"{split}/loss"] = loss_metric.compute()
        loss_metric.reset()
        return values

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics, self.val_loss)

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics, self.test_loss)

    def on_validation_epoch_end(self) -> None:
        values = self._epoch_values("val", self.val_metrics, self.val_loss)
        if not self.trainer.sanity_checking:
            self.log_validation(values)

    def log_validation(self, values: dict[str, Tensor]) -> None:
        """Log one validation epoch's values and the best-so-far monitored metric."""
        # values are already reduced across processes by torchmetrics; sync_dist only averages
        # identical numbers and silences Lightning's DDP warning.
        self.log_dict(values, sync_dist=True)
        if self.monitor in values:
            self.val_best.update(values[self.monitor])
            self.log(f"{self.monitor}_best", self.val_best.compute(), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        values = self._epoch_values("test", self.test_metrics, self.test_loss)
        self.log_dict(values, sync_dist=True)

    # -- optimisation -------------------------------------------------------------------------
    # scheduler state that is derived from the run's length; on resume (possibly with a new
    # trainer.max_epochs) the freshly configured values win, so the schedule stretches to the
    # new budget instead of failing with "Tried to step N times".
    LENGTH_KEYS = ("total_steps", "_schedule_phases", "T_max")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for state in checkpoint.get("lr_schedulers", []):
            for key in self.LENGTH_KEYS:
                state.pop(key, None)
        if "rng_states" in checkpoint and self.trainer.state.fn == "fit":
            set_rng_states(checkpoint["rng_states"])  # exact continuation of dropout etc.

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = collect_rng_states()

    def logged_metric_names(self) -> list[str]:
        """Every metric this task logs per epoch (what a scheduler may monitor)."""
        names = ["train/loss", "val/loss", f"{self.monitor}_best"]
        if self.kind != "embedding":
            names.append("train/mae" if self.kind == "regression" else "train/acc")
            names += [f"val/{k}" for k in self.val_metrics.keys(keep_base=True)]
        if self.kind == "embedding":
            names.append("val/acc")
        return sorted(set(names))

    def configure_optimizers(self) -> Any:
        from losslab.optim import configure, describe_param_groups

        monitor = self.hparams.scheduler.get("monitor")
        if monitor and self.hparams.scheduler.get("name") == "plateau":
            logged = self.logged_metric_names()
            if monitor not in logged:
                raise UserError(f"scheduler 'plateau': 'monitor' is '{monitor}', which is never "
                                f"logged. Logged metrics: {', '.join(logged)}."
                                + did_you_mean(monitor, logged))

        out = configure(self.model, self.optim_config(), dict(self.hparams.scheduler),
                        steps_per_run=int(self.trainer.estimated_stepping_batches),
                        epochs=int(self.trainer.max_epochs or 1))
        rank_zero_info(describe_param_groups(out["optimizer"].param_groups))
        return out

    def optim_config(self) -> dict[str, Any]:
        """The optimizer config, with `fused` turned off under a GradScaler (16-bit AMP): a
        fused optimizer unscales inside its kernel, so Lightning skips `scaler.unscale_()` and
        every gradient reader (statistics, health, clipping) would see scaled gradients."""
        optim = dict(self.hparams.optim)
        scaler = getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None)
        if scaler is None or "fused" not in optim:
            return optim
        if optim["fused"]:
            raise UserError("optim.fused=true cannot be combined with 16-bit mixed precision "
                            f"(trainer.precision={self.trainer.precision}): the fused step "
                            "unscales the gradients itself, after the gradient callbacks and "
                            "clipping read them. Use optim.fused=null (the default) or "
                            "trainer.precision=bf16-mixed.")
        return {**optim, "fused": False}

    # -- gradient clipping and step vetoes (attached by losslab.callbacks) ----------------------
    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Last hook before the optimizer's update (after every `on_before_optimizer_step`).

        A `step_guard` (GradHealth, action skip/stop) may veto the step here (it raises
        SkipStep, caught in `optimizer_step`); then the `gradient_clipper` (GradClip) clips, or,
        without one, Lightning's own `trainer.gradient_clip_val` clipping applies.
        """
        guard = getattr(self, "step_guard", None)
        if guard is not None:
            guard.check(self)
        clipper = getattr(self, "gradient_clipper", None)
        if clipper is not None and clipper.active:
            clipper.clip(self, optimizer)
        elif gradient_clip_val:  # Lightning's clipping does nothing without a value (~50 us)
            super().configure_gradient_clipping(optimizer, gradient_clip_val,
                                                gradient_clip_algorithm)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any,
                       optimizer_closure: Any = None) -> None:
        """Lightning's step; with a `step_guard` attached, a vetoed step leaves the weights and
        the optimizer state untouched (the closure still runs once, inside optimizer.step)."""
        guard = getattr(self, "step_guard", None)
        if guard is None:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        else:
            guard.run_step(self, optimizer, optimizer_closure)


def needs_graph_closure(name: str | None) -> bool:
    """True for optimizers whose closure must return the graph (natural_gradient)."""
    if not name or name not in OPTIMIZERS:
        return False
    return OPTIMIZERS.canonical(name) == "natural_gradient"


def _cache_signature(fn: Any) -> None:
    """Lightning reads training_step's signature (`inspect.getfullargspec`) on every step to see
    whether it takes batch_idx: a cached `__signature__` makes that ~3x cheaper."""
    if getattr(fn, "__signature__", None) is None:
        fn.__signature__ = inspect.signature(fn)


_cache_signature(SupervisedTask.training_step)
