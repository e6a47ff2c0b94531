"""The user-facing error type and its message helpers."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Something the user can fix (config, data, shapes). Printed without a traceback."""


def did_you_mean(value: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' Did you mean 'x'?' for the closest choices, or '' if none is close."""
    close = difflib.get_close_matches(str(value), list(choices), n=n, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"


def check_range(
    owner: str,
    key: str,
    value: float | None,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allow_none: bool = False,
) -> None:
    """Raise UserError naming `owner.key`, the value and the allowed interval if out of range."""
    if value is None:
        if allow_none:
            return
        raise UserError(f"{owner}: '{key}' must be set (got None).")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{owner}: '{key}' must be a number, got {value!r}.") from None
    ok = v == v  # NaN is never allowed
    if low is not None:
        ok = ok and (v >= low if low_inclusive else v > low)
    if high is not None:
        ok = ok and (v <= high if high_inclusive else v < high)
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        interval = f"{'[' if low_inclusive and low is not None else '('}{lo}, {hi}"
        interval += "]" if high_inclusive and high is not None else ")"
        raise UserError(f"{owner}: '{key}' must be in {interval}, got {value!r}.")


def check_choice(owner: str, key: str, value: str, choices: Iterable[str]) -> None:
    """Raise UserError if `value` is not one of `choices`, with a did-you-mean."""
    choices = list(choices)
    if value not in choices:
        raise UserError(
            f"{owner}: '{key}' must be one of {', '.join(map(repr, choices))}, got {value!r}."
            + did_you_mean(str(value), choices)
        )
