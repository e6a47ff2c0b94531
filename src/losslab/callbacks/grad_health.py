"""GradHealth: flags vanishing, exploding and non-finite gradients and acts on them.

Three kinds of event, judged on the statistics of `grad_stats` (per-layer norms ||g_l|| and the
total norm ||g|| of the gradients the optimizer is about to use):

* ``non_finite``: the loss or ||g|| is NaN/Inf (any NaN/Inf gradient entry makes ||g|| so).
* ``exploding``: ||g|| > ``explode_above``, or ||g|| > ``growth_factor`` * EMA(||g||) once the
  running average has ``warmup_steps`` steps (EMA_t = beta EMA_{t-1} + (1 - beta) ||g_t||,
  updated with healthy steps only).
* ``vanishing``: on a check step, some layer has ||g_l|| < ``vanish_below``, or
  ||g_first|| / ||g_last|| < ``ratio_below`` (first and last layer in registration order), for
  ``patience`` consecutive checks. The event names every layer under either bound.

Each kind has an action (``on_vanishing``, ``on_exploding``, ``on_non_finite``):

* ``warn``: a readable log warning naming the layers and values (the first ``max_warnings``
  of each kind; all events go to grad_health.json);
* ``skip``: the optimizer step is vetoed, so the step never reaches the weights (and the
  optimizer state); counted as ``skipped_steps``. After ``max_consecutive_skips`` skips in a
  row the run stops (nothing is learning any more);
* ``reduce_lr``: every learning rate (and the scheduler's base/max/min learning rates) is
  multiplied by ``lr_factor``;
* ``stop``: the step is vetoed (as skip) and ``trainer.should_stop`` ends the run gracefully;
  FiniteCheckpoint keeps the last good checkpoint;
* ``raise``: GradientHealthError (a UserError: printed without traceback, exit code 2);
* ``none``: the kind is not checked.

Cost. Every step, the row [||g||, ||g_l||..., loss] is stored (on CPU as Python floats, read
without a sync; on an accelerator as a device tensor); the window is read back (one host
transfer) every ``check_every_n_steps`` (config default 10; None: the
trainer's log_every_n_steps)
and judged on the host, so warn/reduce_lr/raise/none add no per-step host sync. ``skip`` and
``stop`` for non_finite/exploding must decide *before* the optimizer step: then each step does
one small device->host read (free on CPU; on a GPU it waits for the backward pass to finish):
for non_finite only ``isfinite(||g|| + loss)``, the full judgement of the step waits for the
next check unless it is not finite; for exploding the whole row, judged at once.
Vanishing never needs that (it is judged on check steps). Under DDP all ranks see the same
all-reduced gradients, so they take the same decision without communicating. Optimizers that
evaluate the closure several times per step (LBFGS, NewtonCG, NaturalGradient) have the extra
evaluations checked for NaN/Inf only, and a veto restores the weights they had moved.

grad_health.json (in trainer.default_root_dir = the run folder) holds every event
``{step, kind, layers, values, action}`` and a summary, rewritten after each check with new
events and at the end of training (also when training fails).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from losslab.callbacks.fast_step import Row, next_multiple
from losslab.callbacks.grad_stats import grad_stats, reset_layout
from losslab.callbacks.tensorboard import log_scalars
from losslab.callbacks.trainer_reads import forget, global_step, is_global_zero
from losslab.errors import UserError, check_choice, check_range

log = logging.getLogger(__name__)

Action = Literal["none", "warn", "skip", "reduce_lr", "stop", "raise"]
ACTIONS = ("none", "warn", "skip", "reduce_lr", "stop", "raise")
KINDS = ("non_finite", "exploding", "vanishing")
STEP_KINDS = ("non_finite", "exploding")  # judged per step; may veto the step
VETO_ACTIONS = ("skip", "stop")


class GradientHealthError(UserError):
    """Raised by GradHealth for a kind whose action is `raise`."""


class SkipStep(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised inside `optimizer.step` (from `configure_gradient_clipping`) to veto the update."""


def _repeats_closure(optimizer: Any) -> bool:
    """Optimizers that call the closure several times per step and move the weights between
    calls (LBFGS, NewtonCG, NaturalGradient): a veto in a later call must restore the weights."""
    if isinstance(optimizer, torch.optim.LBFGS) or getattr(optimizer, "repeats_closure", False):
        return True
    try:
        from losslab.optim import NaturalGradient, NewtonCG
    except ImportError:  # pragma: no cover
        return False
    return isinstance(optimizer, (NewtonCG, NaturalGradient))


class StepGuard:
    """Attached as `pl_module.step_guard`; lets GradHealth veto an optimizer step.

    GradHealth sets `veto` in `on_before_optimizer_step`; the module's
    `configure_gradient_clipping` (the last hook before the optimizer's update) calls `check`,
    which raises SkipStep; the module's `optimizer_step` runs the step through `run_step`, which
    catches it. The closure (forward + backward) still runs exactly once for ordinary
    optimizers, inside `optimizer.step` as Lightning does it.
    """

    def __init__(self) -> None:
        self.veto = False
        self.skipped = 0
        self._repeats: tuple[Any, bool] | None = None

    def check(self, module: torch.nn.Module) -> None:
        if self.veto:
            self.veto = False
            raise SkipStep

    def run_step(self, module: L.LightningModule, optimizer: Any,
                 closure: Callable[[], Any] | None) -> Any:
        inner = getattr(optimizer, "optimizer", optimizer)
        snapshot: list[tuple[Tensor, Tensor]] = []
        if self._repeats is None or self._repeats[0] is not inner:  # once per optimizer
            self._repeats = (inner, _repeats_closure(inner))
        if self._repeats[1]:
            snapshot = [(p, p.detach().clone()) for g in inner.param_groups for p in g["params"]]
        self.veto = False
        try:
            return optimizer.step(closure=closure)
        except SkipStep:
            self.skipped += 1
            with torch.no_grad():
                for p, saved in snapshot:
                    p.copy_(saved)
            scaler = getattr(getattr(module.trainer, "precision_plugin", None), "scaler", None)
            if scaler is not None:  # AMP unscaled the grads already: close the scaler's step
                scaler.update()
            return None
        finally:
            self.veto = False


def scale_learning_rates(trainer: L.Trainer, factor: float, min_lr: float = 0.0) -> list[float]:
    """lr <- max(lr * factor, min_lr) in every param group, including the keys schedulers
    rebuild the lr from (initial_lr, max_lr, min_lr; base_lrs), so the change survives the next
    scheduler step. Returns the new learning rates."""
    new = []
    for opt in trainer.optimizers:
        for group in opt.param_groups:
            for key in ("lr", "initial_lr", "max_lr", "min_lr"):
                if isinstance(group.get(key), (int, float)):
                    floor = 0.0 if key == "min_lr" else min_lr
                    group[key] = max(float(group[key]) * factor, floor)
            if isinstance(group.get("lr"), (int, float)):
                new.append(float(group["lr"]))
    for config in trainer.lr_scheduler_configs:
        sched = config.scheduler
        if isinstance(getattr(sched, "base_lrs", None), list):
            sched.base_lrs = [max(b * factor, min_lr) for b in sched.base_lrs]
    return new


class GradHealth(Callback):
    """Flags vanishing, exploding and non-finite gradients and applies the configured action."""

    groupable = True  # dispatched with the other gradient callbacks (callbacks/group.py)

    def __init__(self, vanish_below: float = 1e-7, ratio_below: float = 1e-4,
                 patience: int = 3, explode_above: float = 1e4, growth_factor: float = 20.0,
                 ema_beta: float = 0.98, warmup_steps: int = 50,
                 check_every_n_steps: int | None = None, on_vanishing: Action = "warn",
                 on_exploding: Action = "warn", on_non_finite: Action = "skip",
                 lr_factor: float = 0.5, min_lr: float = 0.0, max_consecutive_skips: int = 50,
                 filename: str = "grad_health.json", max_events: int = 1000,
                 max_warnings: int = 3, log_to_loggers: bool = True) -> None:
        owner = "callbacks.grad_health"
        check_range(owner, "vanish_below", vanish_below, low=0)
        check_range(owner, "ratio_below", ratio_below, low=0)
        check_range(owner, "patience", patience, low=1)
        check_range(owner, "explode_above", explode_above, low=0, low_inclusive=False)
        check_range(owner, "growth_factor", growth_factor, low=1, low_inclusive=False)
        check_range(owner, "ema_beta", ema_beta, low=0, high=1, high_inclusive=False)
        check_range(owner, "warmup_steps", warmup_steps, low=0)
        check_range(owner, "check_every_n_steps", check_every_n_steps, low=1, allow_none=True)
        check_range(owner, "lr_factor", lr_factor, low=0, high=1, low_inclusive=False)
        check_range(owner, "min_lr", min_lr, low=0)
        check_range(owner, "max_consecutive_skips", max_consecutive_skips, low=1)
        self.actions: dict[str, str] = {}
        for kind, action in zip(KINDS, (on_non_finite, on_exploding, on_vanishing), strict=True):
            check_choice(owner, f"on_{kind}", action, ACTIONS)
            self.actions[kind] = action
        if on_vanishing == "skip":
            raise UserError(f"{owner}: 'on_vanishing' cannot be 'skip' (vanishing is judged over "
                            "several checks, after the steps); use warn, reduce_lr, stop or "
                            "raise.")
        self.vanish_below, self.ratio_below, self.patience = vanish_below, ratio_below, patience
        self.explode_above, self.growth_factor = explode_above, growth_factor
        self.ema_beta, self.warmup_steps = ema_beta, int(warmup_steps)
        self.check_every_n_steps = check_every_n_steps
        self.lr_factor, self.min_lr = lr_factor, min_lr
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.filename, self.max_events, self.max_warnings = filename, max_events, max_warnings
        self.log_to_loggers = log_to_loggers
        self.per_step = any(self.actions[k] in VETO_ACTIONS for k in STEP_KINDS)
        self.veto_exploding = self.actions["exploding"] in VETO_ACTIONS
        self.guard = StepGuard()
        self.path: Path | None = None
        self._reset()

    # -- state ---------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.counts = dict.fromkeys(KINDS, 0)
        self.lr_reductions = 0
        self.stopped: str | None = None
        self.steps_judged = 0
        self.checks = 0
        self._warned = dict.fromkeys(KINDS, 0)
        self._window: list[tuple[int, Any, bool]] = []
        self._loss: Tensor | None = None
        self._ema: float | None = None
        self._ema_n = 0
        self._vanish_streak = 0
        self._vanish_episode = False
        self._consecutive_skips = 0
        self._last_checked = -1
        self._dirty = False
        self._names: tuple[str, ...] = ()
        self._logged: tuple[int, ...] | None = None  # the counts last logged
        self._last_step = -1
        self.guard.skipped = 0

    state_key = "GradHealth"  # a constant (Lightning reads it on every hook call)

    def _every(self, trainer: L.Trainer) -> int:
        return int(self.check_every_n_steps or trainer.log_every_n_steps or 1)

    # -- hooks ---------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._reset()
        self.path = Path(trainer.default_root_dir) / self.filename
        reset_layout(pl_module)
        forget(trainer)
        if not self.per_step:
            return
        from lightning.pytorch.utilities.model_helpers import is_overridden

        if not (pl_module.automatic_optimization
                and is_overridden("configure_gradient_clipping", pl_module)
                and is_overridden("optimizer_step", pl_module)):
            log.warning("GradHealth: %s does not consult `step_guard` (manual optimization, or "
                        "no configure_gradient_clipping/optimizer_step override), so skip/stop "
                        "cannot veto a step: skip only records it, stop ends the run after it.",
                        type(pl_module).__name__)
            return
        object.__setattr__(pl_module, "step_guard", self.guard)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.guard._repeats = None  # drop the reference to the optimizer (and its state)
        if getattr(pl_module, "step_guard", None) is self.guard:
            object.__delattr__(pl_module, "step_guard")

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           loss: Tensor) -> None:
        # read after the backward pass (detached: no graph kept, no warning when read as a
        # float); summed only under gradient accumulation
        self._loss = loss.detach() if self._loss is None else self._loss + loss.detach()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Any) -> None:
        stats = grad_stats(pl_module)
        if stats is None:
            return
        step = global_step(trainer)
        if stats.layer_names != self._names:
            if self._window:  # the set of layers with gradients changed: judge the old rows
                self._flush(trainer, pl_module, check=False)
            self._names = stats.layer_names
        loss = self._loss if self._loss is not None else torch.zeros((), device=stats.device)
        self._loss = None
        row: list[float] | Tensor  # [||g||, ||g_layer||..., loss]
        if stats.on_cpu:  # reading CPU memory is no sync: floats right away
            try:
                value = float(loss)  # (one call for the usual 1-element loss)
            except (RuntimeError, ValueError):  # several elements: their sum
                value = float(loss.detach().float().sum())
            row = [*stats.host_row(), value]
        else:  # on the device, read back with the window
            if loss.numel() != 1:
                loss = loss.detach().float().sum()
            loss = loss.detach().float().reshape(1).to(stats.packed.device)
            row = torch.cat([stats.packed, loss])
        # LBFGS-style optimizers evaluate the closure at trial points within one step: those
        # repeats are checked for NaN/Inf only (no exploding test, no running average)
        self._window.append((step, row, step == self._last_step))
        self._last_step = step
        every = self._every(trainer)
        check = (step + 1) % every == 0 and step != self._last_checked
        if check or (self.per_step and self._must_judge_now(row)):
            self._flush(trainer, pl_module, check=check)

    def _must_judge_now(self, row: list[float] | Tensor) -> bool:
        """Before a step that skip/stop may veto: always when exploding can veto (it needs the
        running average), else only when ||g|| or the loss is not finite (one float read on a
        device; the window's finite steps are judged together on the next check step)."""
        if self.veto_exploding:
            return True
        if isinstance(row, list):
            return not (math.isfinite(row[0]) and math.isfinite(row[-1]))
        return not math.isfinite(float(row[0] + row[-1]))  # one device sync

    # -- FastStep's member side (fast_step.py) -------------------------------------------------
    def fast_ready(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """FastStep tests each step for NaN/Inf; a veto on exploding needs the full judgement
        before every step, so then each step stays here."""
        return not self.veto_exploding

    def next_own_step(self, trainer: L.Trainer, step: int) -> int:
        """The next check step after `step`."""
        return next_multiple(step, self._every(trainer))

    def absorb(self, trainer: L.Trainer, pl_module: L.LightningModule,
               names: tuple[str, ...], rows: list[Row]) -> None:
        """Add FastStep's rows (finite, not repeated) to the window, as the per-step hook
        would have."""
        if names != self._names:
            if self._window:
                self._flush(trainer, pl_module, check=False)
            self._names = names
        self._window += [(s, [*row, loss], False) for s, row, loss in rows]
        self._last_step = rows[-1][0]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._window:
            self._flush(trainer, pl_module, check=False)
        if self._last_step >= 0:
            self._log(trainer, self._last_step, force=True)
        self.write(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self.write(trainer)

    # -- judging -------------------------------------------------------------------------------
    def _flush(self, trainer: L.Trainer, pl_module: L.LightningModule, check: bool) -> None:
        """One host transfer for the window; judge each step, then vanishing if a check step."""
        steps = [s for s, _, _ in self._window]
        repeats = [r for _, _, r in self._window]
        entries = [t for _, t, _ in self._window]
        if isinstance(entries[0], list):  # CPU: already floats
            rows = entries
        elif len(entries) == 1:
            rows = [entries[0].tolist()]
        else:
            rows = torch.stack(entries).tolist()
        self._window.clear()
        new_events = len(self.events)
        for step, row, repeat in zip(steps, rows, repeats, strict=True):
            self._judge_step(trainer, step, row[0], row[-1], row[1:-1], repeat)
        if check:
            self._last_checked = steps[-1]
            self.checks += 1
            row = rows[-1]
            if math.isfinite(row[0]):
                self._judge_vanishing(trainer, steps[-1], row[1:-1])
        if len(self.events) != new_events or self._dirty:
            self._dirty = False
            self.write(trainer)
        if check:
            self._log(trainer, steps[-1])

    def _log(self, trainer: L.Trainer, step: int, force: bool = False) -> None:
        """health/* counters, when they changed since they were last logged (and once at the
        first check, so the charts exist): TensorBoard draws them as steps."""
        if not (self.log_to_loggers and is_global_zero(trainer)):
            return
        counts = (*self.counts.values(), self.guard.skipped)
        if counts != self._logged or force:
            self._logged = counts
            metrics = {f"health/{k}_events": float(v) for k, v in self.counts.items()}
            metrics["health/skipped_steps"] = float(self.guard.skipped)
            log_scalars(trainer, metrics, step)

    def _judge_step(self, trainer: L.Trainer, step: int, total: float, loss: float,
                    layers: list[float], repeat: bool = False) -> None:
        self.steps_judged += not repeat
        names = self._names
        if not (math.isfinite(total) and math.isfinite(loss)):
            bad = [n for n, v in zip(names, layers, strict=False) if not math.isfinite(v)]
            values = {"loss": loss, "norm_total": total}
            values.update({n: v for n, v in zip(names, layers, strict=False)
                           if not math.isfinite(v)})
            self._event(trainer, step, "non_finite", bad, values,
                        "loss" if math.isfinite(total) else "gradients")
            return
        if repeat:
            return
        reasons = []
        if total > self.explode_above:
            reasons.append(f"> explode_above={self.explode_above:g}")
        if self._ema is not None and self._ema_n >= self.warmup_steps \
                and total > self.growth_factor * self._ema:
            reasons.append(f"> {self.growth_factor:g} x running average {self._ema:.4g}")
        if reasons:
            top = sorted(zip(names, layers, strict=False), key=lambda kv: -kv[1])[:3]
            values = {"norm_total": total, **dict(top)}
            if self._ema is not None:
                values["running_average"] = self._ema
            self._event(trainer, step, "exploding", [n for n, _ in top], values,
                        " and ".join(reasons))
            if self._ema is not None:  # a lasting new level is accepted within ~10 steps
                self._update_ema(min(total, self.growth_factor * self._ema))
            return
        self._consecutive_skips = 0
        self._update_ema(total)

    def _update_ema(self, value: float) -> None:
        b = self.ema_beta
        self._ema = value if self._ema is None else b * self._ema + (1 - b) * value
        self._ema_n += 1

    def _judge_vanishing(self, trainer: L.Trainer, step: int, layers: list[float]) -> None:
        if self.actions["vanishing"] == "none" or not layers:
            return
        names = self._names
        last = layers[-1]
        ratio = layers[0] / last if last > 0 else (math.inf if layers[0] > 0 else 0.0)
        low = [i for i, v in enumerate(layers) if v < self.vanish_below]
        if ratio < self.ratio_below:
            low = sorted(set(low) | {i for i, v in enumerate(layers[:-1])
                                     if last > 0 and v / last < self.ratio_below})
        if not low:
            self._vanish_streak, self._vanish_episode = 0, False
            return
        self._vanish_streak += 1
        if self._vanish_streak < self.patience or self._vanish_episode:
            return
        self._vanish_episode = True  # one event per episode; it ends when the check passes
        values = {names[i]: layers[i] for i in low}
        values["ratio_first_last"] = ratio
        reason = (f"||g|| < vanish_below={self.vanish_below:g} or ||g_layer|| / ||g_last|| < "
                  f"ratio_below={self.ratio_below:g} for {self.patience} checks")
        self._event(trainer, step, "vanishing", [names[i] for i in low], values, reason)

    # -- acting --------------------------------------------------------------------------------
    def _event(self, trainer: L.Trainer, step: int, kind: str, layers: list[str],
               values: dict[str, float], reason: str) -> None:
        action = self.actions[kind]
        if action == "none":
            if kind in STEP_KINDS:
                self._consecutive_skips = 0
            return
        self.counts[kind] += 1
        event = {"step": step, "kind": kind, "layers": layers,
                 "values": {k: _json_float(v) for k, v in values.items()}, "action": action,
                 "reason": reason}
        if len(self.events) < self.max_events:
            self.events.append(event)
        message = self._message(event)
        if action in VETO_ACTIONS and kind in STEP_KINDS:
            self.guard.veto = self.per_step
            self._consecutive_skips += 1
            if action == "skip" and self._consecutive_skips >= self.max_consecutive_skips:
                self._stop(trainer, f"{self._consecutive_skips} steps in a row were skipped "
                                    f"({kind}); nothing is learning any more")
        elif kind in STEP_KINDS:
            self._consecutive_skips = 0
        if action == "reduce_lr":
            lrs = scale_learning_rates(trainer, self.lr_factor, self.min_lr)
            self.lr_reductions += 1
            shown = ", ".join(f"{x:.3g}" for x in lrs)
            message += f" Learning rate x{self.lr_factor:g} -> {shown}."
        elif action == "stop":
            self._stop(trainer, f"{kind} at step {step}")
        elif action == "raise":
            self.write(trainer)
            raise GradientHealthError(message + " (callbacks.grad_health.on_"
                                      f"{kind}=raise; see {self.path})")
        if self._warned[kind] < self.max_warnings and trainer.is_global_zero:
            self._warned[kind] += 1
            more = " Further events of this kind go to grad_health.json only." \
                if self._warned[kind] == self.max_warnings else ""
            log.warning("%s%s", message, more)

    def _stop(self, trainer: L.Trainer, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            self._dirty = True
            log.warning("GradHealth: stopping the run: %s. The last good checkpoint is kept.",
                        reason)
        trainer.should_stop = True

    @staticmethod
    def _message(event: dict[str, Any]) -> str:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in list(event["values"].items())[:6])
        layers = ", ".join(event["layers"][:6]) + (" ..." if len(event["layers"]) > 6 else "")
        what = {"non_finite": "non-finite", "exploding": "exploding",
                "vanishing": "vanishing"}[event["kind"]]
        where = f" in {layers}" if layers else ""
        verb = {"skip": " Step skipped.", "stop": " Step skipped.", "warn": "",
                "reduce_lr": "", "raise": ""}[event["action"]]
        return (f"GradHealth: {what} gradients at step {event['step']}{where} "
                f"({event['reason']}): {shown}.{verb}")

    # -- report --------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return {
            "events": dict(self.counts),
            "skipped_steps": self.guard.skipped,
            "lr_reductions": self.lr_reductions,
            "stopped": self.stopped is not None,
            "stop_reason": self.stopped,
            "steps_judged": self.steps_judged,
            "checks": self.checks,
            "first_event": {k: next((e["step"] for e in self.events if e["kind"] == k), None)
                            for k in KINDS},
            "events_dropped": max(0, sum(self.counts.values()) - len(self.events)),
            "actions": {f"on_{k}": v for k, v in self.actions.items()},
            "thresholds": {"vanish_below": self.vanish_below, "ratio_below": self.ratio_below,
                           "patience": self.patience, "explode_above": self.explode_above,
                           "growth_factor": self.growth_factor},
        }

    def write(self, trainer: L.Trainer | None = None) -> None:
        """grad_health.json: {"summary": ..., "events": [...]} (rank zero, atomic)."""
        if self.path is None or (trainer is not None and not trainer.is_global_zero):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"summary": self.summary(), "events": self.events}, indent=1))
        os.replace(tmp, self.path)


def _json_float(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)  # "nan"/"inf": JSON has no NaN


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
