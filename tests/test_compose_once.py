"""losslab.compose_once: `Hydra.get_mode`'s composition is reused by `Hydra.run`, and the
config handed over is the one Hydra would have composed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hydra import initialize_config_module
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

from losslab import compose_once


@pytest.fixture
def hydra_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, list[int]]]:
    """(the Hydra instance with losslab's configs, [number of real compositions so far]),
    with compose_once installed."""
    monkeypatch.delenv("LOSSLAB_COMPOSE_ONCE", raising=False)
    calls = [0]
    real = ConfigLoaderImpl._load_configuration_impl

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ConfigLoaderImpl, "_load_configuration_impl", counting)
    compose_once.install()
    try:
        with initialize_config_module("losslab.conf", version_base="1.3"):
            yield GlobalHydra.instance().hydra, calls
    finally:
        compose_once.uninstall()


def as_run(hydra: Any, overrides: list[str]) -> tuple[Any, Any]:
    """What `_run_hydra` does for `python train.py <overrides>`: get_mode, then (mode None)
    `Hydra.run`'s composition with hydra.mode=RUN appended. Returns (mode, config)."""
    overrides = list(overrides)
    mode = hydra.get_mode(config_name="train", overrides=overrides)
    if mode is None:
        overrides.append("hydra.mode=RUN")
    cfg = hydra.compose_config(config_name="train", overrides=overrides,
                               with_log_configuration=False, run_mode=RunMode.RUN)
    return mode, cfg


def plain(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


@pytest.mark.parametrize("overrides", [
    [],
    ["loss=focal", "optim=adam", "trainer.max_epochs=3"],
    ["experiment=vanishing_gradients"],
    ["+callbacks.first_step._target_=losslab.callbacks.timing.FirstStepTimer",
     "hydra.run.dir=/tmp/somewhere", "~callbacks.grad_clip"],
    ["hydra.mode=RUN", "seed=7"],
])
def test_one_composition_gives_the_config_hydra_composes(hydra_app, overrides) -> None:
    hydra, calls = hydra_app
    mode, once = as_run(hydra, overrides)
    assert calls[0] == 1  # get_mode's composition was handed to run
    assert mode == (RunMode.RUN if "hydra.mode=RUN" in overrides else None)
    compose_once.uninstall()
    _, twice = as_run(hydra, overrides)  # Hydra's own path: two compositions
    assert calls[0] == 3
    assert plain(once) == plain(twice)
    assert once.hydra.mode == RunMode.RUN
    assert list(once.hydra.overrides.hydra).count("hydra.mode=RUN") == 1


def test_a_multirun_preset_reports_its_mode_and_composes_normally(hydra_app) -> None:
    hydra, calls = hydra_app
    mode = hydra.get_mode(config_name="train", overrides=["hparams_search=mnist1d_grid"])
    assert mode == RunMode.MULTIRUN
    assert "load_configuration" not in vars(hydra.config_loader)  # nothing handed over
    hydra.compose_config(config_name="train", overrides=["hparams_search=mnist1d_grid"],
                         run_mode=RunMode.MULTIRUN)
    assert calls[0] == 2


def test_a_different_next_call_composes_normally(hydra_app) -> None:
    hydra, calls = hydra_app
    assert hydra.get_mode(config_name="train", overrides=["seed=1"]) is None
    # `-m` without sweep values: Hydra appends hydra.mode=MULTIRUN and composes for multirun
    cfg = hydra.compose_config(config_name="train", overrides=["seed=1", "hydra.mode=MULTIRUN"],
                               run_mode=RunMode.MULTIRUN)
    assert cfg.hydra.mode == RunMode.MULTIRUN and calls[0] == 2
    assert "load_configuration" not in vars(hydra.config_loader)


def test_sweep_values_and_bad_overrides_keep_hydras_own_path_and_errors(hydra_app) -> None:
    hydra, calls = hydra_app
    assert hydra.get_mode(config_name="train", overrides=["optim.lr=0.1,0.2"]) is None
    assert calls[0] == 1  # Hydra's MULTIRUN composition, no trial RUN one
    with pytest.raises(ConfigCompositionException, match="Ambiguous value"):
        hydra.compose_config(config_name="train",
                             overrides=["optim.lr=0.1,0.2", "hydra.mode=RUN"],
                             run_mode=RunMode.RUN)
    assert hydra.get_mode(config_name="train", overrides=["loss=no_such_loss"]) is None
    assert "load_configuration" not in vars(hydra.config_loader)


def test_switched_off_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra._internal.hydra import Hydra

    own = Hydra.get_mode
    monkeypatch.setenv("LOSSLAB_COMPOSE_ONCE", "0")
    compose_once.install()
    assert Hydra.get_mode is own


def test_another_hydra_version_keeps_its_own_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import hydra
    from hydra._internal.hydra import Hydra

    own = Hydra.get_mode
    monkeypatch.delenv("LOSSLAB_COMPOSE_ONCE", raising=False)
    monkeypatch.setattr(hydra, "__version__", "1.4.0")
    compose_once.install()
    assert Hydra.get_mode is own
