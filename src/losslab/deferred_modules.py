"""Deferred modules: a module that is imported by name now but executed on first use.

    defer_module("scipy.signal", {"hamming": function("windows.hamming")}, reader="torchmetrics")

puts a module object for `scipy.signal` into `sys.modules` (and onto its parent package)
without running its code. The first read of an attribute it does not have yet executes the
real module into that same object, so every reference taken before (`import scipy.signal`,
`from scipy import signal`) sees the real module from then on. Until then:

- `__file__`, `__path__`, `__spec__` are set (`inspect.getmodule` scans every module's
  `__file__`; submodules such as `scipy.signal.windows` import normally through `__path__`);
- `stand_ins` answer the attribute reads of code in `reader` (a module, or a package and its
  submodules; None: any code) that must not trigger the load. Each maps a name to a dotted
  target inside the module and stands for it until the load:
  - `function(target)`: a function that loads the module and calls the target;
  - `class_(target)`: a class whose `isinstance`/`issubclass` checks, calls and attribute reads
    go to the real class (loading the module);
  - `context(target)`: a function returning a context manager (usable as a decorator, as
    `contextlib.contextmanager`'s are) that calls the target when it is entered;
  - `namespace(target, **stand_ins)`: an object with those stand-ins as attributes; any other
    attribute is read from the real target.
  Code outside `reader` gets no stand-in: its first read of a missing attribute loads the
  module, so only the reader can ever hold a stand-in. After the load, a stand-in name the
  module does not define itself becomes an alias of its target (so
  `scipy.signal.hamming is scipy.signal.windows.hamming`, as torchmetrics would have made it).

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
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StandIn:
    """What stands for `module.<target>` until the module is loaded (see the docstring)."""

    kind: str  # "function" | "class" | "context" | "namespace"
    target: str
    attrs: tuple[tuple[str, StandIn], ...] = ()


def function(target: str) -> StandIn:
    return StandIn("function", target)


def class_(target: str) -> StandIn:
    return StandIn("class", target)


def context(target: str) -> StandIn:
    return StandIn("context", target)


def namespace(target: str, **stand_ins: StandIn) -> StandIn:
    return StandIn("namespace", target, tuple(stand_ins.items()))


class DeferredModule(types.ModuleType):
    """A module whose code runs on the first read of an attribute it lacks."""

    def __getattr__(self, name: str) -> Any:
        stand_in = self.__dict__.get("__deferred_stand_ins__", {}).get(name)
        if stand_in is not None and _reads_for(sys._getframe(1),
                                               self.__dict__.get("__deferred_reader__")):
            return stand_in
        load_deferred(self)
        return getattr(self, name)


def load_deferred(module: types.ModuleType) -> types.ModuleType:
    """Execute a deferred module's code into it (no-op for any other module)."""
    if type(module) is not DeferredModule:
        return module
    module.__class__ = types.ModuleType  # before executing: its own imports read attributes
    saved = {k: module.__dict__.pop(k) for k in ("__deferred_stand_ins__", "__deferred_specs__",
                                                 "__deferred_reader__")}
    try:
        module.__spec__.loader.exec_module(module)
    except BaseException:
        module.__class__ = DeferredModule
        module.__dict__.update(saved)
        raise
    for name, spec in saved["__deferred_specs__"].items():
        if name not in module.__dict__:
            setattr(module, name, _resolve(module, spec.target))
    return module


def defer_module(name: str, stand_ins: Mapping[str, StandIn | str] | None = None,
                 reader: str | None = None) -> bool:
    """Register `name` as a deferred module whose `stand_ins` answer reads from `reader`
    (a plain string is a `function` stand-in); False (nothing done) if it is already imported
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
    specs = {attr: function(s) if isinstance(s, str) else s
             for attr, s in (stand_ins or {}).items()}
    module.__dict__["__deferred_specs__"] = specs
    module.__dict__["__deferred_reader__"] = reader
    module.__dict__["__deferred_stand_ins__"] = {
        attr: _stand_in(module, attr, s) for attr, s in specs.items()}
    module.__class__ = DeferredModule
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


def _reads_for(frame: types.FrameType | None, reader: str | None) -> bool:
    """Whether the code running in `frame` belongs to `reader` (None: any code). The import
    system's own frames are looked through (`from package import name` reads `name` in
    importlib's `_handle_fromlist`, for the module that runs the import)."""
    if reader is None:
        return True
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(("importlib", "_frozen_importlib")):
            return name == reader or name.startswith(reader + ".")
        frame = frame.f_back
    return False


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


def _stand_in(module: types.ModuleType, attr: str, spec: StandIn) -> Any:
    """The object standing for `module.<spec.target>` until the module is loaded."""

    def real() -> Any:
        return _resolve(load_deferred(module), spec.target)

    where = f"{module.__name__}.{spec.target}"
    if spec.kind == "class":
        return _StandInClass(attr, (), {"__deferred_real__": staticmethod(real),
                                        "__doc__": f"Stand-in for {where}."})
    if spec.kind == "namespace":
        return _StandInNamespace(real, {a: _stand_in(module, a, s) for a, s in spec.attrs})
    if spec.kind == "context":
        def call(*args: Any, **kwargs: Any) -> Any:
            return _LazyContext(real, args, kwargs)
    elif spec.kind == "function":
        def call(*args: Any, **kwargs: Any) -> Any:
            return real()(*args, **kwargs)
    else:
        raise ValueError(f"unknown stand-in kind {spec.kind!r} for {where}")
    call.__name__ = call.__qualname__ = attr
    call.__doc__ = f"Stand-in for {where} (loads {module.__name__})."
    return call


class _StandInClass(type):
    """Metaclass of class stand-ins: checks, calls and attribute reads go to the real class."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls.__deferred_real__())

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls.__deferred_real__())

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls.__deferred_real__()(*args, **kwargs)

    def __getattr__(cls, name: str) -> Any:
        return getattr(cls.__deferred_real__(), name)


class _StandInNamespace:
    """Attributes given as stand-ins; any other attribute read from the real object."""

    def __init__(self, real: Callable[[], Any], attrs: dict[str, Any]) -> None:
        self.__dict__.update(attrs)
        self.__dict__["_real"] = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)


class _LazyContext(contextlib.ContextDecorator):
    """`open(*args, **kwargs)`'s context manager, made only when entered."""

    def __init__(self, open_: Callable[[], Any], args: tuple, kwargs: dict) -> None:
        self._open, self._args, self._kwargs = open_, args, kwargs
        self._active: list[Any] = []

    def _recreate_cm(self) -> _LazyContext:  # a fresh one per decorated call (re-entrant)
        return _LazyContext(self._open, self._args, self._kwargs)

    def __enter__(self) -> Any:
        manager = self._open()(*self._args, **self._kwargs)
        self._active.append(manager)
        return manager.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._active.pop().__exit__(*exc)
