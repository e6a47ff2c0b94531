"""The Optuna sweeper, resumable: a sweep rerun with the same storage and study name adds
trials to the study, and its job folders continue the numbering instead of overwriting the
first run's folders.

Hydra's Optuna plugin (1.3.0) restarts job numbers at 0 on every run and opens a SQLite
storage before Hydra creates the sweep folder. This subclass (a) creates the folder of a
`sqlite:///<path>` storage, (b) starts job numbers at the study's trial count and (c) reseeds
the sampler on resume, so a seeded sampler does not propose the first run's points again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


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


class ResumableOptunaSweeper(OptunaSweeper):
    """`OptunaSweeper` that resumes a stored study (see the module docstring)."""

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
        return impl.sweep(arguments)
