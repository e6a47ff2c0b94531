"""FastStep: the gradient callbacks' shared per-step work, done once, in one hook.

At `log_every_n_steps=1` GradMonitor and GradHealth each have work on every step, but on nine
steps out of ten it is the same work: the gradient norms (one native pass, see grad_stats.py),
the loss read, a NaN/Inf test and a row [||g||, ||g_layer||..., loss] kept for later (the
monitor writes its rows every 10 steps, the health detector judges its window every 10
steps). Dispatched member by member that costs ~100 us of Python bookkeeping per step (hook
dispatch, schedule arithmetic, the shared-statistics cache, three callbacks' own buffers),
2-3% of a default-MLP step on a 2-core CPU. FastStep does that work itself and keeps the rows:

    per step:   ||g_p||, ||g||, ||g_layer||  (one native call) -> finite(||g||, loss)?
                -> rows += (step, [||g||, ||g_layer||...], loss)
    own steps:  the rows go to the members (`absorb`), then their hooks run as always

A member's *own* steps are those where it has work beyond keeping the row: the monitor's
flush, update-ratio and histogram steps, the health detector's check steps, an active
clipper's flush steps (`next_own_step`); and any step that is not finite (the members judge
it, and GradHealth may veto it) or is repeated within one optimizer step (LBFGS). So every log
line, TensorBoard value, event and veto is what the members alone would produce, on the same
step (a test runs both ways, through a planted NaN, and compares).

CallbackGroup (group.py) builds a FastStep when its members that have per-step hooks all
implement the member side (`fast_ready`, `next_own_step`, `absorb`; GradMonitor, GradHealth
and GradClip do; GradClip with mode=none has no per-step hooks at all) and `LOSSLAB_FAST_STEP`
is not 0. It arms itself per fit, after the first step, only where the native CPU kernel
serves the model (a CPU run with float32/64 parameters, see native/norms.py) and every member
says it is ready (`fast_ready`: not for `on_exploding=skip|stop`, which judges every step
before it runs, nor for a monitor that logs weight norms every step); otherwise every step is
an own step and the members' hooks run exactly as without it. Before any other hook reaches
the members (epoch end, validation, checkpointing, the end of training, an exception) the kept
rows are handed over (`sync`).

An active clipper clips every step from the module's `configure_gradient_clipping`, which
Lightning calls after these hooks; it reads the step's norms through `grad_stats`. On the
steps FastStep keeps, nobody else has filled that cache, so FastStep leaves its own norms
there (`share_host_norms`, when a member `reads_grad_stats()`): one norm pass per step, as
without FastStep.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Protocol

import lightning.pytorch as L
from torch import Tensor

from losslab.callbacks.grad_stats import get_layout, share_host_norms
from losslab.callbacks.trainer_reads import global_step, step_counter

#: the hooks FastStep takes over from its members
FAST_HOOKS = ("on_before_backward", "on_before_optimizer_step", "on_train_batch_end")

Row = tuple[int, list[float], float]  # (step, [||g||, ||g_layer||...], loss)


def enabled() -> bool:
    """False when LOSSLAB_FAST_STEP is 0 / false / no / off."""
    value = os.environ.get("LOSSLAB_FAST_STEP", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


_isfinite = math.isfinite


def _value(loss: Tensor) -> float:
    """The loss as a float (the sum, for a loss of several elements)."""
    try:
        return float(loss)
    except (RuntimeError, ValueError):
        return float(loss.float().sum())


class FastMember(Protocol):
    """The member side: GradMonitor and GradHealth implement it (`is_fast_member`)."""

    def fast_ready(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool: ...

    def next_own_step(self, trainer: L.Trainer, step: int) -> int: ...

    def absorb(self, trainer: L.Trainer, pl_module: L.LightningModule,
               names: tuple[str, ...], rows: list[Row]) -> None: ...


def is_fast_member(callback: Any) -> bool:
    return all(callable(getattr(callback, name, None))
               for name in ("fast_ready", "next_own_step", "absorb"))


#: `next_own_step` of a member that has no own step ahead
NEVER = 2**62


def next_multiple(step: int, every: int) -> int:
    """The first step s > `step` with (s + 1) % every == 0 (every >= 1)."""
    return ((step + 1) // every + 1) * every - 1


#: buffered log rows (the monitor's, the clipper's) are written at a logging step s with
#: (s + 1) % FLUSH_SPAN == 0, or once they span this many steps, and at every epoch end: at
#: log_every_n_steps=1 one host transfer and one write per 10 steps instead of one per step
FLUSH_SPAN = 10


def flush_due(step: int, first: int) -> bool:
    """Whether rows buffered since step `first` are written at logging step `step`."""
    return (step + 1) % FLUSH_SPAN == 0 or step - first >= FLUSH_SPAN - 1


def next_flush_step(step: int, every: int, first: int | None) -> int:
    """The first logging step after `step` (logging every `every` steps) where `flush_due`
    can hold, for a buffer whose first row is at `first` (None: empty; its first row comes at
    the next logging step)."""
    first = next_multiple(step, every) if first is None else first
    return min(next_multiple(step, math.lcm(every, FLUSH_SPAN)),
               next_multiple(max(step, first + FLUSH_SPAN - 2), every))


class FastStep:
    """The shared per-step path of a group's gradient callbacks (see the module docstring)."""

    def __init__(self, members: Sequence[FastMember], by_hook: dict[str, list[Any]]) -> None:
        """`members`: the group's members with per-step hooks (all FastMembers), in order;
        `by_hook`: each FAST_HOOKS hook's callees, in order (the group's dispatch lists)."""
        self.members = list(members)
        # a member that reads grad_stats on every step (the active clipper): the norms of the
        # steps kept here are left in its cache (no second norm pass)
        self._share = any(getattr(m, "reads_grad_stats", bool)() for m in self.members)
        self._backward = list(by_hook["on_before_backward"])
        self._before_step = list(by_hook["on_before_optimizer_step"])
        self._batch_end = list(by_hook["on_train_batch_end"])
        self.steps_fast = 0  # steps done here, over all fits (for tests and benchmarks)
        self.reset()

    def reset(self) -> None:
        """Forget the fit (called before `on_fit_start` reaches the members, and after
        `teardown`)."""
        self.rows: list[Row] = []
        self._loss: Tensor | None = None
        self._counter: Any = None  # trainer.global_step's counter (None: not armed)
        self._norms: Any = None  # the native per-step call: fn(grads, *args) -> floats
        self._norm_args: tuple[Any, ...] = ()
        self._params: list[Any] = []
        self._count = 0
        self._names: tuple[str, ...] = ()
        self._next_own = 0
        self._last = -1  # the last step seen (a repeat within a step is an own step)
        self._own_open = -1  # the own step whose on_train_batch_end is still due
        self._trainer: L.Trainer | None = None
        self._module: L.LightningModule | None = None

    # -- the three per-step hooks --------------------------------------------------------------
    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           loss: Tensor) -> None:
        # summed under gradient accumulation (as GradHealth does); handed to the members on
        # their own steps
        self._loss = loss.detach() if self._loss is None else self._loss + loss.detach()

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Any) -> None:
        counter = self._counter
        if counter is not None:  # armed
            step = counter.completed
            if step < self._next_own and step != self._last:
                grads = [p.grad for p in self._params]
                try:
                    host = self._norms(grads, *self._norm_args)
                except AttributeError:  # a parameter without a gradient this step
                    host = None
                if host is not None:
                    loss, self._loss = self._loss, None
                    value = 0.0 if loss is None else _value(loss)
                    if _isfinite(host[self._count]) and _isfinite(value):
                        self.rows.append((step, host, value))
                        self._last = step
                        self.steps_fast += 1
                        if self._share:
                            share_host_norms(pl_module, step, grads, host)
                        return
                    self._loss = loss  # not finite: the members judge this step themselves
        self._own_step(trainer, pl_module, optimizer, global_step(trainer))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._own_open < 0:
            return
        for member in self._batch_end:
            member.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if global_step(trainer) > self._own_open:  # the own step's optimizer step is done
            self._plan_next(trainer, self._own_open)  # (the members' buffers are settled now)
            self._own_open = -1

    # -- own steps and hand-over ---------------------------------------------------------------
    def _own_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any,
                  step: int) -> None:
        """A step with work of the members' own: the kept rows, the loss, then their hooks."""
        self._trainer, self._module = trainer, pl_module
        self.sync()
        loss, self._loss = self._loss, None
        if loss is not None:
            for member in self._backward:
                member.on_before_backward(trainer, pl_module, loss)
        for member in self._before_step:
            member.on_before_optimizer_step(trainer, pl_module, optimizer)
        self._last = step
        self._own_open = step
        self._arm(trainer, pl_module)
        self._plan_next(trainer, step)

    def _plan_next(self, trainer: L.Trainer, step: int) -> None:
        """The next step on which a member has work of its own (none while not armed)."""
        if self._counter is not None:
            self._next_own = min(m.next_own_step(trainer, step) for m in self.members)

    def _arm(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Take the per-step work over when the native kernel serves every gradient and every
        member is ready; else leave every step to the members."""
        layout = get_layout(pl_module)
        plan = layout.norm_plan() if layout.params and all(
            m.fast_ready(trainer, pl_module) for m in self.members) else None
        self._counter = None if plan is None else step_counter(trainer)
        if self._counter is not None:
            self._norms, self._norm_args = plan.direct()  # type: ignore[union-attr]
        self._params, self._count = layout.params, len(layout.params)
        self._names = layout.layer_names

    def sync(self) -> None:
        """Hand the kept rows to the members (before any of their other hooks runs)."""
        if not self.rows:
            return
        rows, self.rows = self.rows, []
        trainer, module = self._trainer, self._module
        if trainer is None or module is None:
            return
        count = self._count  # host = [||g_p||..., ||g||, ||g_layer||...]
        rows = [(step, host[count:], loss) for step, host, loss in rows]
        for member in self.members:
            member.absorb(trainer, module, self._names, rows)
