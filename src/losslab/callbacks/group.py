"""CallbackGroup: several callbacks that Lightning sees, and dispatches to, as one.

Lightning calls every hook on every callback, whether it overrides the hook or not, and wraps
each call in a profiler context with a formatted name: ~10 Python calls per callback per hook,
six hooks per training step. The three gradient callbacks (GradMonitor, GradHealth, GradClip:
the ones that run on every step), with Lightning's LearningRateMonitor next to them, are
therefore grouped by `group_callbacks` when the Trainer is built: Lightning dispatches each
hook once, to the group, which calls only the members that override it, in their configured
order. Nothing else changes: each member keeps its own config entry
(`callbacks.grad_health.*`), its state in checkpoints (the group's state is
`{member.state_key: member.state_dict()}`), and its hooks run in the same order as before (only
consecutive groupable callbacks are grouped). `find_callback(trainer, GradHealth)` finds a
callback inside or outside a group.

A hook that no member needs is set to None on the group, which Lightning's dispatch skips
(it calls only callable hook attributes): no call, no profiler context. A member needs a hook
when its class overrides it and it does not list the hook in `idle_hooks()` (what its
configuration leaves idle, e.g. GradClip with mode=none has nothing to do per step).

When every member with work in the per-step gradient hooks (`FAST_HOOKS`) implements
FastStep's member side (GradMonitor, GradHealth, GradClip), those hooks go to one FastStep
(fast_step.py), which does their shared per-step work once and calls them only on the steps
where they have work of their own; every other hook that reaches one of them hands FastStep's
kept rows over first. `LOSSLAB_FAST_STEP=0` turns that off (the members' hooks every step).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import Any, TypeVar

from lightning.pytorch.callbacks import Callback

from losslab.callbacks import fast_step

T = TypeVar("T")

HOOKS = tuple(name for name, value in inspect.getmembers(Callback)
              if (name.startswith("on_") or name in ("setup", "teardown")) and callable(value))


#: hooks Lightning calls directly, not through its `callable` check: always forwarded
DIRECT_HOOKS = frozenset({"on_save_checkpoint", "on_load_checkpoint"})


def overrides(callback: Callback, hook: str) -> bool:
    """Whether the callback's class (not Lightning's base) defines `hook`."""
    return getattr(type(callback), hook, None) is not getattr(Callback, hook)


def needs(callback: Callback, hook: str) -> bool:
    """Whether the callback has work in `hook`: it overrides it and does not declare it idle."""
    idle = getattr(callback, "idle_hooks", None)
    return overrides(callback, hook) and not (callable(idle) and hook in idle())


class CallbackGroup(Callback):
    """Forwards every hook to the members that override it (see the module docstring)."""

    def __init__(self, members: Iterable[Callback]) -> None:
        self.members = list(members)
        self._by_hook = {hook: [m for m in self.members if needs(m, hook)] for hook in HOOKS}
        self.fast: fast_step.FastStep | None = None
        stepping = [m for m in self.members
                    if any(m in self._by_hook[h] for h in fast_step.FAST_HOOKS)]
        if stepping and fast_step.enabled() and all(map(fast_step.is_fast_member, stepping)):
            self.fast = fast_step.FastStep(
                stepping, {h: self._by_hook[h] for h in fast_step.FAST_HOOKS})
        # hooks after which FastStep's kept rows must reach the members first
        self._sync = frozenset(h for h, callees in self._by_hook.items()
                               if h not in fast_step.FAST_HOOKS
                               and any(m in stepping for m in callees)) if self.fast else ()
        for hook, callees in self._by_hook.items():
            if self.fast is not None and hook in fast_step.FAST_HOOKS and callees:
                setattr(self, hook, getattr(self.fast, hook))  # Lightning calls FastStep
            elif self.fast is not None and hook == "on_fit_start":
                pass  # always dispatched: FastStep forgets the previous fit there
            elif not callees and hook not in DIRECT_HOOKS:
                setattr(self, hook, None)  # Lightning skips it: nothing to dispatch

    @cached_property
    def state_key(self) -> str:
        return f"CallbackGroup[{','.join(m.state_key for m in self.members)}]"

    def state_dict(self) -> dict[str, Any]:
        if self.fast is not None:
            self.fast.sync()
        return {m.state_key: state for m in self.members if (state := m.state_dict())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for m in self.members:
            if m.state_key in state_dict:
                m.load_state_dict(state_dict[m.state_key])

    def __repr__(self) -> str:
        return f"CallbackGroup({', '.join(type(m).__name__ for m in self.members)})"


def _forward(hook: str) -> Any:
    def call(self: CallbackGroup, *args: Any, **kwargs: Any) -> None:
        fast = self.fast
        if fast is not None:
            if hook == "on_fit_start":
                fast.reset()
            elif fast.rows and hook in self._sync:
                fast.sync()
        for member in self._by_hook[hook]:
            getattr(member, hook)(*args, **kwargs)
        if fast is not None and hook == "teardown":
            fast.reset()  # drop its references to the trainer, the module and the parameters

    call.__name__ = hook
    call.__doc__ = f"Calls `{hook}` on each member that overrides it."
    return call


for _hook in HOOKS:
    setattr(CallbackGroup, _hook, _forward(_hook))


def groupable(callback: Any) -> bool:
    """Callbacks that opt in with a class attribute `groupable = True` (the gradient ones), and
    Lightning's LearningRateMonitor (which Lightning never looks up by type, unlike checkpoint,
    progress-bar, model-summary and early-stopping callbacks)."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    return getattr(type(callback), "groupable", False) is True \
        or type(callback) is LearningRateMonitor


def group_callbacks(callbacks: Iterable[Any]) -> list[Any]:
    """Each run of two or more consecutive groupable callbacks becomes one CallbackGroup."""
    out: list[Any] = []
    run: list[Any] = []
    for cb in [*callbacks, None]:
        if cb is not None and groupable(cb):
            run.append(cb)
            continue
        out += [CallbackGroup(run)] if len(run) > 1 else run
        run = []
        if cb is not None:
            out.append(cb)
    return out


def iter_callbacks(callbacks: Iterable[Any]) -> Iterator[Any]:
    """Every callback, with the members of groups in place of the groups."""
    for cb in callbacks:
        if isinstance(cb, CallbackGroup):
            yield from cb.members
        else:
            yield cb


def find_callback(trainer: Any, kind: type[T]) -> T | None:
    """The trainer's first callback of type `kind`, inside a group or not."""
    return next((cb for cb in iter_callbacks(trainer.callbacks) if isinstance(cb, kind)), None)
