"""Deferred modules: a module that is imported by name now but executed on first use.

    defer_module("scipy.signal", stand_ins={"hamming": "windows.hamming"})

puts a module object for `scipy.signal` into `sys.modules` (and onto its parent package)
without running its code. The first read of an attribute it does not have yet executes the
real module into that same object, so every reference taken before (`import scipy.signal`,
`from scipy import signal`) sees the real module from then on. Until then:

- `__file__`, `__path__`, `__spec__` are set (`inspect.getmodule` scans every module's
  `__file__`; submodules such as `scipy.signal.windows` import normally through `__path__`);
- `stand_ins` answer attribute reads that must not trigger the load: each name maps to a
  dotted path inside the module and is bound to a function that loads the module and calls
  that target. After the load, a stand-in the module does not define itself is replaced by
  its target (so `scipy.signal.hamming is scipy.signal.windows.hamming`).

This is `importlib.util.LazyLoader`'s idea; LazyLoader loads on *any* attribute read, and
`hasattr(module, "hamming")` at import time (torchmetrics) would defeat it, hence the
stand-ins.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


class DeferredModule(types.ModuleType):
    """A module whose code runs on the first read of an attribute it lacks."""

    def __getattr__(self, name: str) -> Any:
        load_deferred(self)
        return getattr(self, name)


def load_deferred(module: types.ModuleType) -> types.ModuleType:
    """Execute a deferred module's code into it (no-op for any other module)."""
    if type(module) is not DeferredModule:
        return module
    module.__class__ = types.ModuleType  # before executing: its own imports read attributes
    stand_ins: dict[str, str] = module.__dict__.pop("__deferred_stand_ins__", {})
    try:
        module.__spec__.loader.exec_module(module)
    except BaseException:
        module.__class__ = DeferredModule
        module.__dict__["__deferred_stand_ins__"] = stand_ins
        raise
    for name, target in stand_ins.items():
        if getattr(module.__dict__.get(name), "__deferred_target__", None) == target:
            setattr(module, name, _resolve(module, target))
    return module


def defer_module(name: str, stand_ins: Mapping[str, str] | None = None) -> bool:
    """Register `name` as a deferred module; False (nothing done) if it is already imported
    or not installed."""
    if name in sys.modules:
        return False
    parent_name, _, child = name.rpartition(".")
    try:
        spec = importlib.util.find_spec(name)  # imports the parent package
    except (ImportError, ValueError):
        return False
    if spec is None or spec.loader is None or name in sys.modules:
        return False
    module = importlib.util.module_from_spec(spec)
    module.__class__ = DeferredModule
    module.__dict__["__deferred_stand_ins__"] = dict(stand_ins or {})
    for attr, target in (stand_ins or {}).items():
        setattr(module, attr, _stand_in(module, attr, target))
    sys.modules[name] = module
    if parent_name:
        setattr(sys.modules[parent_name], child, module)
    return True


def is_deferred(name: str) -> bool:
    """Whether `name` is registered as deferred and its code has not run yet."""
    return type(sys.modules.get(name)) is DeferredModule


def still_deferred() -> list[str]:
    """The modules registered as deferred whose code has not run yet, sorted."""
    return sorted(n for n, m in list(sys.modules.items()) if type(m) is DeferredModule)


def _resolve(module: types.ModuleType, target: str) -> Any:
    """`module.<target>` for a dotted target, importing submodules on the way."""
    obj: Any = module
    parts = target.split(".")
    for i, part in enumerate(parts):
        if isinstance(obj, types.ModuleType) and part not in obj.__dict__:
            with contextlib.suppress(ModuleNotFoundError):  # else getattr raises below
                importlib.import_module(".".join([module.__name__, *parts[: i + 1]]))
        obj = getattr(obj, part)
    return obj


def _stand_in(module: types.ModuleType, attr: str, target: str) -> Callable[..., Any]:
    """A function standing for `module.<target>` until the module is loaded."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return _resolve(load_deferred(module), target)(*args, **kwargs)

    call.__name__ = call.__qualname__ = attr
    call.__doc__ = f"Stand-in for {module.__name__}.{target} (loads {module.__name__})."
    call.__deferred_target__ = target  # type: ignore[attr-defined]
    return call
