"""What a run needs to be rerun: package and library versions, git commit, command line."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig

LIBRARIES = ("losslab", "torch", "lightning", "hydra-core", "torchmetrics", "numpy",
             "scikit-learn", "mnist1d", "tensorboard")


def git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_provenance(out_dir: Path, cfg: DictConfig) -> None:
    """Write `provenance.json` in the run folder."""
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    info = {
        "argv": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "seed": int(cfg.seed),
    }
    (out_dir / "provenance.json").write_text(json.dumps(info, indent=2))
