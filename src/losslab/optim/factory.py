"""`configure`: optimizer + scheduler configs -> Lightning's `configure_optimizers` dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from losslab.errors import UserError, check_choice, check_range
from losslab.optim.optimizers import OPTIMIZERS, REFERENCE_NAMES
from losslab.optim.param_groups import build_param_groups
from losslab.optim.schedulers import SCHEDULERS
from losslab.registry import accepted_parameters

DEFAULT_NO_DECAY = ("bias", "norm")
INTERVALS = ("step", "epoch")
#: schedulers whose shape depends on the run length
NEEDS_TOTAL = ("cosine", "warmup_cosine", "linear_warmup", "onecycle")


def to_plain(cfg: Any) -> Any:
    """DictConfig/ListConfig (or nested plain containers) -> plain dicts and lists, resolved."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        DictConfig = ListConfig = ()  # type: ignore[assignment,misc]
    else:
        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return {str(k): to_plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(to_plain(v) for v in cfg)
    return cfg


def _default(fn: Any, key: str, fallback: Any) -> Any:
    import inspect

    p = inspect.signature(fn).parameters.get(key)
    return fallback if p is None or p.default is inspect.Parameter.empty else p.default


def build_optimizer(model: nn.Module, optim_cfg: Mapping[str, Any] | Any):
    """Optimizer from a config: name, lr, weight_decay, no_decay, lr_scales, impl, kwargs."""
    cfg = dict(to_plain(optim_cfg) or {})
    if "name" not in cfg:
        raise UserError("optimizer config needs a 'name'. Allowed: "
                        f"{', '.join(OPTIMIZERS.names())}.")
    name = OPTIMIZERS.canonical(cfg.pop("name"))
    factory = OPTIMIZERS.get(name)
    for key in ("lr", "weight_decay"):  # before any arithmetic on them: `optim.lr=fast`
        if key in cfg:
            check_range(f"optimizer '{name}'", key, cfg[key], low=0,
                        low_inclusive=key == "weight_decay")
    no_decay = cfg.pop("no_decay", DEFAULT_NO_DECAY)
    lr_scales = cfg.pop("lr_scales", None)
    impl = cfg.pop("impl", "torch") or "torch"
    check_choice(f"optimizer '{name}'", "impl", impl, ("torch", "reference"))
    if impl == "reference":
        if name not in REFERENCE_NAMES:
            raise UserError(f"optimizer '{name}' has no reference implementation (impl: reference "
                            f"exists for {', '.join(REFERENCE_NAMES)}).")
        cfg["impl"] = impl
    if isinstance(cfg.get("betas"), list):  # Hydra lists reach torch as tuples
        cfg["betas"] = tuple(cfg["betas"])
    accepts_wd = "weight_decay" in accepted_parameters(factory)[0]
    wd = cfg.pop("weight_decay", None)
    if wd is None:
        wd = _default(factory, "weight_decay", 0.0)
    if not accepts_wd and wd:
        raise UserError(f"optimizer '{name}' has no 'weight_decay' (got {wd}); set it to 0 and "
                        "add an L2 term to the loss if you need one.")
    lr = cfg.get("lr", _default(factory, "lr", None))
    groups = build_param_groups(model, weight_decay=wd or 0.0, no_decay=no_decay,
                                lr_scales=lr_scales, base_lr=lr)
    if accepts_wd:
        cfg["weight_decay"] = wd
    else:
        for g in groups:
            g.pop("weight_decay", None)
    return OPTIMIZERS.build(name, groups, **cfg)


def build_scheduler(optimizer: Any, sched_cfg: Mapping[str, Any] | Any | None,
                    steps_per_run: int | float | None,
                    epochs: int | None) -> dict[str, Any] | None:
    """Lightning `lr_scheduler` dict from a config (None for `none`)."""
    cfg = dict(to_plain(sched_cfg) or {"name": "none"})
    name = SCHEDULERS.canonical(cfg.pop("name", "none"))
    interval = cfg.pop("interval", "step")
    check_choice(f"scheduler '{name}'", "interval", interval, INTERVALS)
    monitor = cfg.pop("monitor", None) or "val/loss"
    frequency = int(cfg.pop("frequency", 1))
    total = steps_per_run if interval == "step" else epochs
    known = total is not None and 0 < total < float("inf")
    if not known and name in NEEDS_TOTAL:  # Lightning's estimate is inf without max_steps/epochs
        raise UserError(f"scheduler '{name}': the number of {interval}s is unknown ({total}); "
                        "set trainer.max_epochs or trainer.max_steps.")
    total = int(total) if known else 0
    sched = SCHEDULERS.build(name, optimizer, total_steps=total, **cfg)
    if sched is None:
        return None
    out: dict[str, Any] = {"scheduler": sched, "interval": interval, "frequency": frequency}
    if name == "plateau":
        out["monitor"] = monitor
    return out


def configure(model: nn.Module, optim_cfg: Mapping[str, Any] | Any,
              sched_cfg: Mapping[str, Any] | Any | None, steps_per_run: int | float | None,
              epochs: int | None) -> dict[str, Any]:
    """What a LightningModule's `configure_optimizers` returns.

    `steps_per_run` is `trainer.estimated_stepping_batches` (used when the scheduler's interval
    is "step"), `epochs` is `trainer.max_epochs` (interval "epoch"). The scheduler entry is
    omitted for `none`; `monitor` (default val/loss) is set for `plateau` only.
    """
    opt = build_optimizer(model, optim_cfg)
    sched = build_scheduler(opt, sched_cfg, steps_per_run, epochs)
    return {"optimizer": opt} if sched is None else {"optimizer": opt, "lr_scheduler": sched}
