"""Sweep configuration: the summary callback, the Optuna presets (resumable sweeper, SQLite in
the sweep folder), the SLURM launcher preset, and Optuna's SQLite storage itself."""

from __future__ import annotations

from pathlib import Path

import optuna
from hydra import compose, initialize_config_module

from hydra_plugins.losslab_sweepers.resumable_optuna import existing_trials


def hydra_cfg(*overrides: str):
    with initialize_config_module("losslab.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True).hydra


def test_summary_callback_and_fail_exit_are_configured():
    with initialize_config_module("losslab.conf", version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    assert cfg.hydra.callbacks.sweep_summary._target_ == "losslab.sweeps.summary.SweepSummary"
    assert cfg.sweep_fail_exit is True
    assert cfg.data.num_folds is None and cfg.data.fold == 0


def test_optuna_presets_use_the_resumable_sweeper_and_sqlite_in_the_sweep_folder():
    for preset, sampler in [("mnist1d_optuna", "TPESampler"), ("mnist1d_grid", "GridSampler")]:
        h = hydra_cfg(f"hparams_search={preset}", "hydra.sweep.dir=/tmp/sweep-x")
        assert h.sweeper._target_.endswith("ResumableOptunaSweeper")
        assert h.sweeper.storage == "sqlite:////tmp/sweep-x/optuna.db"
        assert h.sweeper.sampler._target_.endswith(sampler)
    params = hydra_cfg("hparams_search=mnist1d_optuna").sweeper.params
    assert {"optim.lr", "optim.weight_decay", "data.batch_size", "model.depth", "model.width",
            "loss.gamma"} <= set(params)
    random = hydra_cfg("hparams_search=mnist1d_optuna", "hydra/sweeper/sampler=random")
    assert random.sweeper.sampler._target_.endswith("RandomSampler")


def test_slurm_launcher_preset_extends_submitit():
    h = hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    assert h.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert h.launcher.partition == "gpu" and h.launcher.timeout_min == 120
    assert hydra_cfg("hydra/launcher=joblib").launcher._target_.endswith("JoblibLauncher")


def test_sqlite_study_storage_counts_trials(tmp_path: Path):
    """optuna 2.10 + SQLAlchemy 2 fails here (AssertionError): pyproject pins sqlalchemy<2."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    assert existing_trials(storage, "s") == 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for _ in range(2):  # the second create_study resumes the first
        study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert existing_trials(storage, "s") == 4 and existing_trials(storage, "other") == 0


def test_every_data_config_has_the_fold_keys():
    from losslab.cli import CONF_DIR

    for path in sorted((CONF_DIR / "data").glob("*.yaml")):
        text = path.read_text()
        assert "\nnum_folds: null" in text and "\nfold: 0" in text, path.name


def test_quoted_run_dir_is_checked_without_its_quotes(tmp_path: Path, monkeypatch):
    """DDP child ranks get hydra.run.dir="<job folder>" (quoted for Hydra's parser)."""
    from losslab.cli import check_output_dir

    monkeypatch.chdir(tmp_path)
    check_output_dir([f'hydra.run.dir="{tmp_path}/job"'])
    assert (tmp_path / "job").is_dir() and not (tmp_path / '"').exists()
