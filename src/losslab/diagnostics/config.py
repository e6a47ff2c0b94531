"""The repository's Hydra config for the diagnostics scripts: `key=value` script options split
from Hydra overrides, composition with losslab's own error messages, and a run folder's config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from losslab.errors import UserError, did_you_mean


def split_options(args: list[str], options: Any) -> tuple[Any, list[str]]:
    """Take `field=value` for the fields of dataclass instance `options` out of `args`; the rest
    are Hydra overrides. Values are parsed as YAML scalars and type-checked against the field."""
    fields = {f.name: f for f in dataclasses.fields(options)}
    overrides, values = [], {}
    for arg in args:
        key, sep, text = arg.partition("=")
        if sep and key in fields:
            values[key] = _parse(key, text, getattr(options, key))
        elif arg.startswith("-"):
            names = ", ".join(f"{k}=" for k in fields)
            raise UserError(f"Unknown option '{arg}'. Options: {names}, plus Hydra overrides "
                            "such as loss=focal model.hidden=[64,64].")
        else:
            overrides.append(arg)
    return dataclasses.replace(options, **values), overrides


def _parse(key: str, text: str, default: Any) -> Any:
    """`text` as the type of `default` (bool, int, float, str; None: any YAML scalar)."""
    kind = type(default)
    try:
        if kind is bool:
            value = yaml.safe_load(text)
            if not isinstance(value, bool):
                raise ValueError
            return value
        if kind in (int, float):
            return kind(text)
        return text if kind is str else yaml.safe_load(text)
    except ValueError:
        raise UserError(f"'{key}' must be a {kind.__name__}, got {text!r}.") from None


def compose_config(overrides: list[str], output_dir: Path | str,
                   data_dir: Path | str | None = None) -> DictConfig:
    """The `train` config with `overrides`, as `python train.py <overrides>` would compose it."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    from losslab.cli import check_group_keys, check_overrides

    check_overrides(overrides)
    check_group_keys(overrides)
    base = [f"paths.output_dir={output_dir}"]
    if data_dir is not None:
        base.append(f"paths.data_dir={data_dir}")
    try:
        with initialize_config_module("losslab.conf", version_base="1.3"):
            return compose("train", overrides=base + list(overrides))
    except HydraException as e:
        raise UserError(f"Could not compose the config from {' '.join(overrides) or '(none)'}: "
                        f"{str(e).splitlines()[0]}") from e


def import_user_modules(cfg: DictConfig) -> None:
    """Import the modules listed in `imports` (as losslab.run does, without importing
    Lightning: the loss-only gradient check starts in 2 s instead of 9)."""
    import importlib

    for name in cfg.get("imports") or []:
        try:
            importlib.import_module(str(name))
        except ImportError as e:
            raise UserError(f"imports: cannot import '{name}' ({e}). Is it on PYTHONPATH?") from e


def run_overrides(run_dir: Path) -> list[str]:
    """The overrides a run folder was made with (.hydra/overrides.yaml), minus hydra.* and
    paths.output_dir; [] when the folder has none."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    saved = yaml.safe_load(path.read_text()) or []
    return [str(o) for o in saved
            if not str(o).lstrip("+~").startswith(("hydra.", "hydra/", "paths.output_dir"))]


def check_fields(owner: str, options: Any, **bounds: tuple[float, float | None]) -> None:
    """UserError when a numeric option is outside [low, high]."""
    for key, (low, high) in bounds.items():
        value = getattr(options, key)
        if value < low or (high is not None and value > high):
            allowed = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}]"
            raise UserError(f"{owner}: '{key}' must be {allowed}, got {value!r}.")


def unknown_choice(owner: str, key: str, value: str, choices: list[str]) -> UserError:
    return UserError(f"{owner}: '{key}' must be one of {', '.join(choices)}, got {value!r}."
                     + did_you_mean(value, choices))
