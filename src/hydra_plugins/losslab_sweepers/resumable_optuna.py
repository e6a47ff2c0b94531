"""The Optuna sweeper, resumable: a sweep rerun with the same storage and study name adds
trials to the study, and its job folders continue the numbering instead of overwriting the
first run's folders.

Hydra's Optuna plugin (1.3.0) restarts job numbers at 0 on every run and opens a SQLite
storage before Hydra creates the sweep folder. This subclass (a) creates the folder of a
`sqlite:///<path>` storage, (b) starts job numbers at the study's trial count and (c) reseeds
the sampler on resume, so a seeded sampler does not propose the first run's points again.
A job that failed (NaN) is told to Optuna as a failed trial, and a study in which every trial
failed ends like any other sweep (summary, exit code 3) instead of with the plugin's error.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def existing_trials(storage: Any, study_name: str | None) -> int:
    """Trials already stored for `study_name` in `storage` (0 when there is no such study)."""
    if storage is None or study_name is None:
        return 0
    import optuna

    try:
        summaries = optuna.get_all_study_summaries(storage=storage)
    except Exception:  # noqa: BLE001 (a new or unreachable storage: create_study reports it)
        return 0
    return next((s.n_trials for s in summaries if s.study_name == study_name), 0)


def completed_trials(storage: str, study_name: str | None) -> int | None:
    """Completed trials of the stored study (None when it cannot be read)."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    except Exception:  # noqa: BLE001
        return None


class _NanAsFailure:
    """Launcher wrapper: a job that returned NaN (losslab's failed or diverged job) returns
    None, which the plugin tells Optuna as a failed trial. (A NaN reaches `study.tell` as a
    value: optuna 2.10 marks the trial failed and raises, and the plugin's second `tell` then
    raises again and ends the sweep.)"""

    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher

    def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
        returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        for ret in returns:
            if ret.status == JobStatus.COMPLETED and isinstance(ret.return_value, float) \
                    and math.isnan(ret.return_value):
                ret.return_value = None
        return returns


class ResumableOptunaSweeper(OptunaSweeper):
    """`OptunaSweeper` that resumes a stored study (see the module docstring)."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweeper.launcher = _NanAsFailure(self.sweeper.launcher)

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        storage = str(impl.storage) if impl.storage is not None else None
        if storage and storage.startswith("sqlite:///"):
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        done = existing_trials(storage, impl.study_name)
        if done:
            impl.job_idx = max(impl.job_idx, done)
            if hasattr(impl.sampler, "reseed_rng"):
                impl.sampler.reseed_rng()
        try:
            impl.sweep(arguments)
        except ValueError as e:  # the plugin's final study.best_trial when every trial failed
            nothing_done = "No trials are completed" in str(e) or (
                storage is not None and completed_trials(storage, impl.study_name) == 0)
            if not nothing_done:
                raise
            log.error("Optuna: no trial completed (every job failed); see summary.md.")
