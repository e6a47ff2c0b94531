"""Shared fixtures: compose the real Hydra config with overrides, pointed at tmp folders."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"  # the git-ignored cache (MNIST-1D is generated once, then reused)

QUIET = ["callbacks.rich_progress_bar=null", "callbacks.rich_model_summary=null"]


def compose_cfg(out_dir: Path, *overrides: str) -> DictConfig:
    """The composed `train` config, as `python train.py <overrides>` would see it."""
    with initialize_config_module("losslab.conf", version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={out_dir}",
                                           f"paths.data_dir={DATA_DIR}", *QUIET, *overrides])


def script(name: str) -> ModuleType:
    """scripts/<name>.py imported as a module (once)."""
    key = f"losslab_script_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    return lambda *overrides: compose_cfg(tmp_path / "run", *overrides)


# Tiny models on 2 cores: one intra-op thread avoids oversubscription (pytest + subprocesses).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
