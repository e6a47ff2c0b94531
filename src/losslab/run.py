"""train(cfg): seed -> data -> loss -> model -> task -> callbacks/loggers -> fit -> test."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from omegaconf import DictConfig, OmegaConf

from losslab.builders import build, instantiate_group, to_dict
from losslab.data import DATASETS, DataInfo
from losslab.errors import UserError
from losslab.losses import LOSSES, Loss
from losslab.models import MODELS
from losslab.provenance import write_provenance
from losslab.startup import resume_gc
from losslab.sweeps.ddp import write_rank_record
from losslab.sweeps.overrides import job_overrides, parse_override
from losslab.tasks import SupervisedTask
from losslab.tuning import applies, tune


def output_dim(loss: Loss, info: DataInfo) -> int:
    """Units of the model's last layer for this loss on this data set."""
    if info.kind == "regression":
        return int(getattr(loss, "outputs_per_sample", 1))
    if loss.kind == "embedding":
        return int(getattr(loss, "embedding_dim", 32))
    assert info.num_classes is not None
    if info.num_classes == 2 and getattr(loss, "accepts_single_logit", False):
        return 1
    return info.num_classes


def check_loss_fits_data(loss: Loss, info: DataInfo, loss_name: str) -> None:
    """A regression loss on class labels (or the reverse) is a config mistake: say so early."""
    if loss.kind == "embedding":
        return
    if loss.kind != info.kind:
        fitting = [n for n in LOSSES.names() if getattr(LOSSES.get(n), "kind", "") == info.kind]
        raise UserError(
            f"loss '{loss_name}' is a {loss.kind} loss, but data '{info.name}' is a {info.kind} "
            f"set. Choose a {info.kind} loss ({', '.join(fitting)}) or a {loss.kind} data set.")
    if getattr(loss, "binary_only", False) and (info.num_classes or 0) > 2:
        raise UserError(
            f"loss '{loss_name}' is binary, but data '{info.name}' has {info.num_classes} "
            "classes. Use loss=ce or loss=focal, or a binary data set (breast_cancer, imbalanced).")


def import_user_modules(cfg: DictConfig) -> None:
    """Import the modules listed in `imports` so their `@LOSSES.register(...)` etc. run."""
    import importlib

    for name in cfg.get("imports") or []:
        try:
            importlib.import_module(str(name))
        except ImportError as e:
            raise UserError(f"imports: cannot import '{name}' ({e}). Is it on PYTHONPATH?") from e


def build_task(cfg: DictConfig) -> tuple[SupervisedTask, L.LightningDataModule]:
    """The data module and the LightningModule described by `cfg`."""
    dm = build(DATASETS, cfg.data, drop=("losses",))  # data.losses: per task (multi-task sets)
    weighting = (cfg.get("multitask") or {}).get("weighting")
    if getattr(dm, "multitask", False):
        from losslab.tasks.multitask import build_multitask_task

        return build_multitask_task(cfg, dm), dm
    if weighting:
        raise UserError(f"multitask.weighting={weighting} needs a multi-task data set "
                        f"(multitask_synthetic, multitask_digits); data '{cfg.data.get('name')}' "
                        "has one task.")
    info = dm.info
    loss = build(LOSSES, cfg.loss, drop=("reduction",))
    loss_name = str(cfg.loss.get("name", cfg.loss.get("_target_", "?")))
    check_loss_fits_data(loss, info, loss_name)
    model = build(MODELS, cfg.model, input_shape=info.input_shape, out_dim=output_dim(loss, info))
    task = SupervisedTask(
        model, loss, kind=info.kind if loss.kind != "embedding" else "embedding",
        num_classes=info.num_classes, optim=to_dict(cfg.optim), scheduler=to_dict(cfg.scheduler),
        monitor=str(cfg.optimized_metric), monitor_mode=str(cfg.optimized_mode),
        regularization=to_dict(cfg.get("task", {}).get("regularization", {})),
        config=to_dict(cfg))
    return task, dm


def _checkpoint(path: Any, out_dir: Path) -> str | None:
    """`ckpt_path` as a file: `last` means this run folder's last.ckpt, else the newest
    `last.ckpt` under outputs/ (resume after a kill with `ckpt_path=last`)."""
    if path in (None, "", "null"):
        return None
    if str(path) == "last":
        own = out_dir / "checkpoints" / "last.ckpt"
        found = [own] if own.is_file() else sorted(
            Path("outputs").glob("**/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError("ckpt_path=last: no checkpoints/last.ckpt in this run folder or "
                            "under outputs/.")
        return str(found[-1])
    p = Path(str(path))
    if not p.is_file():
        raise UserError(f"ckpt_path: no checkpoint file at '{path}'.")
    return str(p)


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and/or test as configured; write metrics.json; return the final metrics."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    import_user_modules(cfg)
    task, dm = build_task(cfg)
    callbacks = instantiate_group(cfg.get("callbacks"), "callback")
    callbacks += instantiate_group({"curriculum": to_dict(cfg.get("curriculum"))}, "callback")
    loggers = instantiate_group(cfg.get("logger"), "logger")
    trainer: L.Trainer = build_trainer(cfg, callbacks, loggers)
    ckpt = _checkpoint(cfg.get("ckpt_path"), out_dir)
    write_provenance(out_dir, cfg)
    resume_gc()  # set up: the collector back on, the start-up objects frozen (losslab.startup)

    metrics: dict[str, float] = tune(cfg, trainer, task, dm, out_dir)  # tune=lr_find|batch_size
    if not applies(cfg):  # search only (tune.apply=false): results in tune.json
        return metrics
    if cfg.get("train", True):
        start = time.perf_counter()
        _guard_checkpoint_load(lambda: trainer.fit(task, datamodule=dm, ckpt_path=ckpt), ckpt)
        metrics["perf/fit_seconds"] = time.perf_counter() - start
        metrics["perf/train_steps"] = float(trainer.global_step)
        metrics.update(_scalars(trainer.callback_metrics))
        if trainer.world_size > 1:  # ddp/rank<r>.json: each rank's overrides + config digest
            write_rank_record(out_dir, trainer.global_rank, trainer.world_size, to_dict(cfg))
    if cfg.get("test", True):
        if cfg.get("train", True):
            best = getattr(trainer.checkpoint_callback, "best_model_path", "")
            test_ckpt = best if best and os.path.exists(best) else None
        else:
            if ckpt is None:
                raise UserError("train=false needs ckpt_path=<path to a .ckpt> to evaluate.")
            test_ckpt = ckpt
        _guard_checkpoint_load(
            lambda: trainer.test(task, datamodule=dm, ckpt_path=test_ckpt, verbose=False),
            test_ckpt)
        metrics.update(_scalars(trainer.callback_metrics))
        if test_ckpt:
            metrics["test/from_checkpoint"] = 1.0
    if trainer.is_global_zero:
        (out_dir / "metrics.json").write_text(json.dumps(dict(sorted(metrics.items())), indent=2))
        _log_hparams(trainer, cfg, metrics)
        print_metrics(metrics)
    return metrics


def build_trainer(cfg: DictConfig, callbacks: list[Any], loggers: list[Any]) -> L.Trainer:
    from hydra.utils import instantiate

    extra: dict[str, Any] = {}
    if cfg.trainer.get("profiler") is None:  # Lightning's default profiler, minus its overhead
        from losslab.profiling import NoProfiler

        extra["profiler"] = NoProfiler()
    from losslab.callbacks.group import group_callbacks

    try:
        return instantiate(cfg.trainer, callbacks=group_callbacks(callbacks),
                           logger=loggers or False, **extra)
    except Exception as e:  # noqa: BLE001 (hydra wraps Lightning's MisconfigurationException)
        cause = e.__cause__ or e
        raise UserError(f"trainer: {str(cause).splitlines()[0]}") from e


def _guard_checkpoint_load(fn: Any, ckpt: str | None) -> Any:
    """Run fit/test; a checkpoint that does not fit the model becomes a UserError."""
    try:
        return fn()
    except (RuntimeError, KeyError) as e:
        msg = str(e)
        if ckpt and ("state_dict" in msg or "size mismatch" in msg or "Missing key" in msg
                     or "Unexpected key" in msg):
            raise UserError(f"ckpt_path '{ckpt}' does not fit this model/config: "
                            f"{msg.splitlines()[0]}") from e
        raise
    except Exception as e:  # noqa: BLE001
        if ckpt and type(e).__name__ in ("UnpicklingError", "EOFError", "BadZipFile"):
            raise UserError(f"ckpt_path '{ckpt}' is not a Lightning checkpoint (torch.load "
                            f"could not read it: {type(e).__name__}). Pass a .ckpt file "
                            "written by a losslab run (checkpoints/last.ckpt or best-*.ckpt).") \
                from e
        raise


def _scalars(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def _log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Hyperparameters + final metrics to TensorBoard's HParams tab."""
    from lightning.pytorch.loggers import TensorBoardLogger

    params = {
        "data": cfg.data.get("name"), "model": cfg.model.get("name"),
        "loss": cfg.loss.get("name", cfg.loss.get("_target_")), "optim": cfg.optim.get("name"),
        "lr": cfg.optim.get("lr"), "scheduler": cfg.scheduler.get("name"),
        "batch_size": cfg.data.get("batch_size"), "max_epochs": cfg.trainer.get("max_epochs"),
        "seed": cfg.seed,
    }
    for k, v in to_dict(cfg.loss).items():
        if k != "name" and isinstance(v, (int, float, str, bool)):
            params[f"loss.{k}"] = v
    for key, value in map(parse_override, job_overrides()):  # swept keys get a column too
        if not key.startswith(("callbacks", "logger", "paths", "hydra")):
            params.setdefault(key, _hparam(OmegaConf.select(cfg, key, default=value), value))
    final = {f"hp/{k}": v for k, v in metrics.items() if k.startswith(("test/", "val/"))}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=final)
            logger.save()


def _hparam(value: Any, text: str) -> Any:
    """A TensorBoard-friendly hparam value: scalars as they are, anything else as its text."""
    return value if isinstance(value, (int, float, str, bool)) else text


def print_metrics(metrics: dict[str, float]) -> None:
    """A short final table: test metrics, best validation metric, fit time."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="losslab: final metrics", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in sorted(metrics.items()):
        if k.startswith(("test/", "perf/")) or k.endswith("_best"):
            table.add_row(k, f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}")
    Console().print(table)
