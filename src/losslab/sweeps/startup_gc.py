"""Hydra callback: a multirun's main process turns the garbage collector back on when the
sweep starts, unless its jobs run in this process (`losslab.startup`).

`train.py` pauses the collector for the start-up, and each job's `losslab.run.train` resumes
it before training. Hydra's basic launcher (the default, and what the Optuna sweeper uses)
runs the jobs in this process, so the first job resumes it, after importing Lightning: those
objects are frozen too. With a launcher that runs the jobs elsewhere (joblib's worker
processes, submitit), the main process never gets there, and without this callback it would
run the whole sweep with the collector off.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from losslab.startup import resume_gc

IN_PROCESS_LAUNCHERS = ("hydra._internal.core_plugins.basic_launcher.BasicLauncher",)


class ResumeGcAtSweepStart(Callback):
    """on_multirun_start: `resume_gc()` unless the launcher runs the jobs in this process."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.launcher._target_") not in IN_PROCESS_LAUNCHERS:
            resume_gc()
