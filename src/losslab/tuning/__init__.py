"""Tuning before training (`tune=lr_find | batch_size`, conf/tune/), wired to Lightning's Tuner.

`tune(cfg, trainer, task, dm, out_dir)` runs the configured search on the run's own trainer,
writes its results into the run folder (tune.json, the lr finder's lr_find.png) and returns
them as metrics (`tune/...`); {} for `tune=none`. With `tune.apply=true` the found value is
written into the task/data module (and the config), and training follows with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from losslab.builders import to_dict
from losslab.errors import UserError, did_you_mean

TUNERS = ("none", "lr_find", "batch_size")


def tune(cfg: DictConfig, trainer: Any, task: Any, dm: Any, out_dir: Path) -> dict[str, float]:
    """Run `cfg.tune` (if any) on `trainer`; return its results as `tune/...` metrics."""
    opts = to_dict(cfg.get("tune") or {})
    name = str(opts.pop("name", "none"))
    opts.pop("apply", None)
    if name == "none":
        return {}
    if name not in TUNERS:
        raise UserError(f"tune.name '{name}' is unknown. Allowed: {', '.join(TUNERS)}."
                        + did_you_mean(name, TUNERS))
    if cfg.get("ckpt_path") not in (None, "", "null"):
        raise UserError(f"tune={name} searches from the initial weights; ckpt_path="
                        f"{cfg.ckpt_path} would resume a run. Drop one of them.")
    if not cfg.get("train", True):
        raise UserError(f"tune={name} needs train=true (it runs training steps).")
    if name == "lr_find":
        from losslab.tuning.lr_finder import find_lr

        return find_lr(cfg, trainer, task, dm, out_dir, **opts)
    from losslab.tuning.batch_size import find_batch_size

    return find_batch_size(cfg, trainer, task, dm, out_dir, **opts)


def applies(cfg: DictConfig) -> bool:
    """True when training should follow the search (`tune=none`, or `tune.apply=true`)."""
    opts = cfg.get("tune") or {}
    return opts.get("name", "none") == "none" or bool(opts.get("apply", False))


__all__ = ["TUNERS", "applies", "tune"]
