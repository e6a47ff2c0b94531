"""Scheduler registry: `SCHEDULERS.build(name, optimizer, total_steps=..., **params)`.

Every factory takes the optimizer and `total_steps` (the number of scheduler steps for the
chosen `interval`: optimizer steps for "step", epochs for "epoch"), and returns a torch LR
scheduler, or None for `none`. All schedulers act multiplicatively on each group's own
initial `lr`, so per-group lr scales (`lr_scales`) survive scheduling; OneCycle gets a
per-group `max_lr` for the same reason.

Catalog: none, step, multistep, exponential, cosine, warmup_cosine, linear_warmup, onecycle,
plateau (ReduceLROnPlateau: needs a `monitor`, default val/loss, usually interval epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim import lr_scheduler

from losslab.errors import UserError, check_choice, check_range
from losslab.registry import Registry

SCHEDULERS: Registry[lr_scheduler.LRScheduler | None] = Registry("scheduler")


def _owner(name: str) -> str:
    return f"scheduler '{name}'"


def _warmup_steps(name: str, total_steps: int, warmup_steps: int | None,
                  warmup_fraction: float | None) -> int:
    if warmup_steps is not None and warmup_fraction is not None:
        raise UserError(f"{_owner(name)}: set 'warmup_steps' or 'warmup_fraction', not both.")
    if warmup_fraction is not None:
        check_range(_owner(name), "warmup_fraction", warmup_fraction, low=0, high=1,
                    high_inclusive=False)
        return int(round(float(warmup_fraction) * total_steps))
    warmup_steps = 0 if warmup_steps is None else warmup_steps
    check_range(_owner(name), "warmup_steps", warmup_steps, low=0)
    if int(warmup_steps) != warmup_steps:
        raise UserError(f"{_owner(name)}: 'warmup_steps' must be an integer, got {warmup_steps!r}.")
    if warmup_steps >= max(total_steps, 1) and warmup_steps > 0:
        raise UserError(f"{_owner(name)}: 'warmup_steps' ({warmup_steps}) must be smaller than the "
                        f"number of scheduler steps ({total_steps}).")
    return int(warmup_steps)


def warmup_cosine_factor(t: int, total_steps: int, warmup_steps: int,
                         min_lr_ratio: float = 0.0) -> float:
    """The warmup_cosine multiplier of the base lr at scheduler step t (t = 0 is the first).

    Linear warm-up ``(t + 1) / (W + 1)`` for ``t < W``, reaching 1 at ``t = W``, then cosine
    ``r + (1 - r) (1 + cos(pi (t - W) / (T - W))) / 2`` down to ``r = min_lr_ratio`` at t = T.
    """
    if t < warmup_steps:
        return (t + 1) / (warmup_steps + 1)
    span = max(total_steps - warmup_steps, 1)
    progress = min((t - warmup_steps) / span, 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@SCHEDULERS.register("none", aliases=("constant",))
def none(optimizer: torch.optim.Optimizer, total_steps: int) -> None:
    """A constant learning rate."""
    return None


@SCHEDULERS.register("step")
def step(optimizer: torch.optim.Optimizer, total_steps: int, step_size: int = 10,
         gamma: float = 0.1) -> lr_scheduler.LRScheduler:
    """Step decay: lr is multiplied by gamma every step_size scheduler steps."""
    check_range(_owner("step"), "gamma", gamma, low=0, low_inclusive=False)
    check_range(_owner("step"), "step_size", step_size, low=1)
    return lr_scheduler.StepLR(optimizer, step_size=int(step_size), gamma=gamma)


@SCHEDULERS.register("multistep", aliases=("multi_step",))
def multistep(optimizer: torch.optim.Optimizer, total_steps: int,
              milestones: Iterable[int] = (30, 60, 90),
              gamma: float = 0.1) -> lr_scheduler.LRScheduler:
    """Multi-step decay: lr is multiplied by gamma at each milestone (scheduler steps)."""
    check_range(_owner("multistep"), "gamma", gamma, low=0, low_inclusive=False)
    try:
        ms = [int(m) for m in milestones]
    except (TypeError, ValueError):
        raise UserError(f"{_owner('multistep')}: 'milestones' must be a list of integers, "
                        f"got {milestones!r}.") from None
    if ms != sorted(set(ms)) or any(m <= 0 for m in ms):
        raise UserError(f"{_owner('multistep')}: 'milestones' must be increasing positive "
                        f"integers, got {ms}.")
    return lr_scheduler.MultiStepLR(optimizer, milestones=ms, gamma=gamma)


@SCHEDULERS.register("exponential", aliases=("exp",))
def exponential(optimizer: torch.optim.Optimizer, total_steps: int,
                gamma: float = 0.99) -> lr_scheduler.LRScheduler:
    """Exponential decay: lr_t = lr_0 * gamma^t."""
    check_range(_owner("exponential"), "gamma", gamma, low=0, high=1, low_inclusive=False)
    return lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


@SCHEDULERS.register("cosine")
def cosine(optimizer: torch.optim.Optimizer, total_steps: int,
           eta_min: float = 0.0) -> lr_scheduler.LRScheduler:
    """Cosine annealing: lr_t = eta_min + (lr_0 - eta_min)(1 + cos(pi t / T)) / 2."""
    check_range(_owner("cosine"), "eta_min", eta_min, low=0)
    return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=eta_min)


@SCHEDULERS.register("warmup_cosine", aliases=("cosine_warmup",))
def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_steps: int | None = None, warmup_fraction: float | None = None,
                  min_lr_ratio: float = 0.0) -> lr_scheduler.LRScheduler:
    """Linear warm-up then cosine decay to `min_lr_ratio` * lr (see `warmup_cosine_factor`).

    Give `warmup_steps` (scheduler steps) or `warmup_fraction` of `total_steps`; default 5%.
    """
    if warmup_steps is None and warmup_fraction is None:
        warmup_fraction = 0.05
    w = _warmup_steps("warmup_cosine", total_steps, warmup_steps, warmup_fraction)
    check_range(_owner("warmup_cosine"), "min_lr_ratio", min_lr_ratio, low=0, high=1)
    t_total = max(int(total_steps), 1)
    return lr_scheduler.LambdaLR(
        optimizer, lambda t: warmup_cosine_factor(t, t_total, w, float(min_lr_ratio))
    )


@SCHEDULERS.register("linear_warmup", aliases=("warmup",))
def linear_warmup(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_steps: int | None = None,
                  warmup_fraction: float | None = None) -> lr_scheduler.LRScheduler:
    """Linear warm-up ``(t + 1) / (W + 1)`` for t < W, then the constant base lr."""
    if warmup_steps is None and warmup_fraction is None:
        warmup_fraction = 0.05
    w = _warmup_steps("linear_warmup", total_steps, warmup_steps, warmup_fraction)
    return lr_scheduler.LambdaLR(optimizer, lambda t: (t + 1) / (w + 1) if t < w else 1.0)


@SCHEDULERS.register("onecycle", aliases=("one_cycle",))
def onecycle(optimizer: torch.optim.Optimizer, total_steps: int, max_lr: float | None = None,
             pct_start: float = 0.3, div_factor: float = 25.0, final_div_factor: float = 1e4,
             anneal_strategy: str = "cos",
             cycle_momentum: bool = True) -> lr_scheduler.LRScheduler:
    """One-cycle (Smith 2018): warm up to max_lr over pct_start, then anneal down.

    `max_lr` defaults to each group's lr; a number given here is multiplied by each group's
    `lr_scale`, so per-module scales survive. With `cycle_momentum` (torch's default) the
    momentum, or Adam's beta1, cycles inversely between 0.85 and 0.95.
    """
    owner = _owner("onecycle")
    check_range(owner, "pct_start", pct_start, low=0, high=1, low_inclusive=False,
                high_inclusive=False)
    check_range(owner, "div_factor", div_factor, low=0, low_inclusive=False)
    check_range(owner, "final_div_factor", final_div_factor, low=0, low_inclusive=False)
    check_choice(owner, "anneal_strategy", anneal_strategy, ("cos", "linear"))
    if max_lr is None:
        max_lrs = [g["lr"] for g in optimizer.param_groups]
    else:
        check_range(owner, "max_lr", max_lr, low=0, low_inclusive=False)
        max_lrs = [float(max_lr) * float(g.get("lr_scale", 1.0)) for g in optimizer.param_groups]
    return lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=max(total_steps, 2),
                                   pct_start=pct_start, div_factor=div_factor,
                                   final_div_factor=final_div_factor,
                                   anneal_strategy=anneal_strategy,
                                   cycle_momentum=bool(cycle_momentum) and _has_momentum(optimizer))


@SCHEDULERS.register("plateau", aliases=("reduce_on_plateau", "reducelronplateau"))
def plateau(optimizer: torch.optim.Optimizer, total_steps: int, mode: str = "min",
            factor: float = 0.1, patience: int = 10, threshold: float = 1e-4,
            threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
            eps: float = 1e-8) -> lr_scheduler.ReduceLROnPlateau:
    """ReduceLROnPlateau: multiply lr by `factor` after `patience` checks without improvement
    of the monitored metric (the scheduler config's `monitor`, default val/loss)."""
    owner = _owner("plateau")
    check_choice(owner, "mode", mode, ("min", "max"))
    check_choice(owner, "threshold_mode", threshold_mode, ("rel", "abs"))
    check_range(owner, "factor", factor, low=0, high=1, low_inclusive=False, high_inclusive=False)
    check_range(owner, "patience", patience, low=0)
    check_range(owner, "min_lr", min_lr, low=0)
    return lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=factor,
                                          patience=int(patience), threshold=threshold,
                                          threshold_mode=threshold_mode, cooldown=int(cooldown),
                                          min_lr=min_lr, eps=eps)


def _has_momentum(optimizer: torch.optim.Optimizer) -> bool:
    """OneCycle can cycle momentum only for optimizers with `momentum` or `betas`
    (lbfgs, newton_cg, natural_gradient, adagrad, ... have neither)."""
    return any(k in optimizer.defaults for k in ("momentum", "betas"))
