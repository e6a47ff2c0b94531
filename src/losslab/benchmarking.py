"""Small helpers the benchmark and report scripts share: where they ran, and writing results."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from losslab.errors import did_you_mean


def one_of(choices: Iterable[str]) -> Callable[[str], str]:
    """An argparse `type` for a name from `choices`: anything else is an error that lists them,
    with a did-you-mean (`--only framwork` -> ... Did you mean 'framework'?)."""
    allowed = list(choices)

    def parse(value: str) -> str:
        if value not in allowed:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not one of {', '.join(allowed)}." + did_you_mean(value, allowed))
        return value

    return parse


def machine_description() -> str:
    """One line: CPU model, cores, GPU (if any), OMP threads, Python and torch versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    return (f"{cpu}, {os.cpu_count()} cores, {gpu} (OMP_NUM_THREADS={threads}); "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def write_json(path: Path | None, data: Any) -> None:
    """Write `data` as indented JSON to `path` (creating its folder); nothing when None."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
