"""Cheap reads of `trainer.global_step` and `trainer.is_global_zero` for per-step hooks.

Lightning resolves both through chains of properties (`global_step`: trainer -> fit loop ->
epoch loop -> lightning_module.automatic_optimization -> progress tracker, ~4 us on this
project's CPU; `is_global_zero`: trainer -> strategy -> cluster environment, ~2 us), and the
gradient callbacks read them several times per step. Here the progress tracker that holds the
count (`..._OptimizationProgress.optimizer.step.total` under automatic optimization,
`_ManualOptimization.optim_step_progress.total` under manual) is looked up once per fit and
then read with one attribute access: Lightning updates and resets it in place (also when it
restores a checkpoint), so the read equals `trainer.global_step`. The global-zero flag is kept
per process: with a token object made at import and again in a forked child, so a trainer
pickled into DDP-spawned workers, or inherited by a fork, looks it up again there (without a
`getpid` system call per read).
`forget(trainer)` drops both (the callbacks call it in `on_fit_start`). Anything that is not a
Lightning Trainer (a test double) is read through its own attributes every time.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as L

_STEP = "_losslab_step_tracker"
_ZERO = "_losslab_global_zero"


class _Process:
    """This process's token (a new one in every interpreter and after every fork)."""

    token = object()

    @classmethod
    def renew(cls) -> None:
        cls.token = object()


os.register_at_fork(after_in_child=_Process.renew)


def _step_tracker(trainer: L.Trainer) -> Any | None:
    """The progress object whose `completed` is trainer.global_step, or None (no module)."""
    module = trainer.lightning_module
    if module is None:
        return None
    loop = trainer.fit_loop.epoch_loop
    if module.automatic_optimization:
        return loop.automatic_optimization.optim_progress.optimizer.step.total
    return loop.manual_optimization.optim_step_progress.total


def global_step(trainer: Any) -> int:
    """`trainer.global_step` (one attribute read after the first call of a fit)."""
    tracker = getattr(trainer, _STEP, None)
    if tracker is not None:
        return tracker.completed
    if not isinstance(trainer, L.Trainer):
        return int(trainer.global_step)
    tracker = _step_tracker(trainer)
    if tracker is None or tracker.completed != trainer.global_step:  # not the one: no cache
        return int(trainer.global_step)
    object.__setattr__(trainer, _STEP, tracker)
    return tracker.completed


def step_counter(trainer: Any) -> Any | None:
    """The object whose `completed` is `trainer.global_step` (kept up to date in place by
    Lightning), or None where there is none to hold on to (a test double, no module yet)."""
    global_step(trainer)
    return getattr(trainer, _STEP, None)


def is_global_zero(trainer: Any) -> bool:
    """`trainer.is_global_zero`, looked up once per fit and process."""
    cached = getattr(trainer, _ZERO, None)
    if cached is not None and cached[0] is _Process.token:
        return cached[1]
    value = bool(trainer.is_global_zero)
    if isinstance(trainer, L.Trainer):
        object.__setattr__(trainer, _ZERO, (_Process.token, value))
    return value


def forget(trainer: Any) -> None:
    """Drop the cached reads (at the start of each fit: a new strategy, module or loop)."""
    for attr in (_STEP, _ZERO):
        if attr in getattr(trainer, "__dict__", {}):
            object.__delattr__(trainer, attr)
