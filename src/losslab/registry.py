"""One generic Registry for losses, optimizers, schedulers, activations and inits."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from losslab.errors import UserError, did_you_mean

T = TypeVar("T")


def normalise(name: str) -> str:
    """Names compare case-insensitively and with '-' equal to '_' (never by truncation)."""
    return str(name).strip().lower().replace("-", "_")


class Registry(Generic[T]):
    """Maps names (and aliases) to classes or factories, with validated `build`.

    >>> LOSSES = Registry("loss")
    >>> @LOSSES.register("focal", aliases=("focal_loss",))
    ... class FocalLoss: ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._aliases: dict[str, str] = {}

    def register(
        self, name: str, aliases: Iterable[str] = ()
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering a class/factory under `name` and `aliases`."""

        def deco(obj: Callable[..., T]) -> Callable[..., T]:
            key = normalise(name)
            if key in self._entries or key in self._aliases:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[key] = obj
            for alias in aliases:
                a = normalise(alias)
                if a in self._entries or a in self._aliases:
                    raise ValueError(f"{self.kind} alias '{alias}' is already registered")
                self._aliases[a] = key
            obj.registry_name = key  # type: ignore[attr-defined]
            return obj

        return deco

    def names(self) -> list[str]:
        """Canonical names, sorted."""
        return sorted(self._entries)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def __contains__(self, name: object) -> bool:
        key = normalise(str(name))
        return key in self._entries or key in self._aliases

    def canonical(self, name: str) -> str:
        key = normalise(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            allowed = self.names()
            raise UserError(
                f"Unknown {self.kind} '{name}'. Allowed: {', '.join(allowed)}."
                + did_you_mean(key, allowed + list(self._aliases))
            )
        return key

    def get(self, name: str) -> Callable[..., T]:
        return self._entries[self.canonical(name)]

    def build(self, name: str, *args: Any, **kwargs: Any) -> T:
        """Construct `name` with keyword validation: unknown keys give a did-you-mean."""
        key = self.canonical(name)
        obj = self._entries[key]
        check_kwargs(f"{self.kind} '{key}'", obj, kwargs)
        return obj(*args, **kwargs)


def accepted_parameters(obj: Callable[..., Any]) -> tuple[list[str], bool]:
    """Keyword names `obj` accepts, and whether it takes arbitrary **kwargs.

    For classes whose __init__ forwards **kwargs to a parent, the parents' names are collected
    along the MRO, so `build` still validates every key.
    """
    targets = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)] \
        if inspect.isclass(obj) else [obj]
    names: list[str] = []
    for target in targets:
        try:
            sig = inspect.signature(target)
        except (TypeError, ValueError):
            return names, True
        var_kw = False
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names:
                names.append(p.name)
        if not var_kw:
            return names, False
        if target is object.__init__:
            break
    return names, True


def check_kwargs(owner: str, obj: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Raise UserError for keyword arguments `obj` does not accept."""
    names, var_kw = accepted_parameters(obj)
    if var_kw:
        return
    for k in kwargs:
        if k not in names:
            raise UserError(
                f"{owner} has no parameter '{k}'. Valid parameters: {', '.join(names)}."
                + did_you_mean(k, names)
            )
