"""Helpers shared by the tuners: Lightning errors as UserErrors, the result file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from losslab.errors import UserError

RESULT_FILE = "tune.json"


def run_tuner(name: str, fn: Callable[[], Any]) -> Any:
    """Call Lightning's Tuner; its configuration errors become one-paragraph UserErrors."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return fn()
    except MisconfigurationException as e:
        raise UserError(f"tune={name}: {str(e).splitlines()[0]}") from e
    except ValueError as e:  # the Tuner's own checks (distributed, a finder already attached)
        if "distributed" not in str(e) and "Tuner" not in str(e):
            raise
        raise UserError(f"tune={name}: {str(e).splitlines()[0]}") from e


def write_result(out_dir: Path, result: dict[str, Any]) -> Path:
    """tune.json in the run folder (what was searched, what was found)."""
    path = Path(out_dir) / RESULT_FILE
    path.write_text(json.dumps(result, indent=2))
    return path
