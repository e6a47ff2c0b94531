"""A failed job leaves `error.json` in its folder: what went wrong, in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

ERROR_FILE = "error.json"


def one_line(error: BaseException) -> str:
    """'<Type>: <first line of the message>' (the message alone for losslab's UserError)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if type(error).__name__ == "UserError":
        return first or "UserError"
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def write_error(job_dir: str | Path, message: str, kind: str = "exception") -> Path:
    """Write `<job_dir>/error.json` = {"error": message, "kind": kind}; return its path."""
    path = Path(job_dir) / ERROR_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"error": message, "kind": kind}, indent=2))
    return path


def read_error(job_dir: str | Path) -> str | None:
    """The one-line error of a failed job, or None when it left no error.json."""
    path = Path(job_dir) / ERROR_FILE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text()).get("error", "failed"))
    except (OSError, ValueError):
        return "failed (unreadable error.json)"


def divergence(metrics: dict[str, float], optimized_metric: str | None) -> str | None:
    """Why a finished job counts as diverged (a non-finite optimized metric or loss), or None.

    The optimized metric is checked as `<key>_best` when logged, else `<key>`; any final metric
    named `.../loss` must be finite too (a NaN loss leaves a finite but meaningless accuracy).
    """
    keys = []
    if optimized_metric:
        keys.append(f"{optimized_metric}_best" if f"{optimized_metric}_best" in metrics
                    else optimized_metric)
    keys += sorted(k for k in metrics if k.split("/")[-1] == "loss")
    for key in keys:
        value = metrics.get(key)
        if value is not None and not math.isfinite(value):
            return f"diverged: {key} = {value}"
    return None
