"""Compose a single run's config once, not twice.

Hydra's `@hydra.main` (1.3) composes the whole config two times before a single run starts:
`Hydra.get_mode` composes it in MULTIRUN mode only to read `hydra.mode` (None unless a preset
or an override sets it), then `Hydra.run` composes it again in RUN mode, with `hydra.mode=RUN`
appended to the overrides when the first answer was None. Each composition reads and merges
every YAML of the defaults tree: ~0.2 s of the ~4 s start-up on this project's 2-core machine
(README, "Performance").

`install()` (called by `losslab.cli.main`, the entry point only) replaces `Hydra.get_mode` with
one that composes in RUN mode instead and keeps the result for the `Hydra.run` that follows:

* The two modes differ only in checks: RUN refuses sweep overrides (`lr=1,2` without `-m`)
  and missing mandatory defaults (`???`), which MULTIRUN skips. So when the RUN composition
  succeeds, the MULTIRUN one would have produced the same config, and its `hydra.mode` is the
  answer. When there are sweep overrides, or the RUN composition fails, Hydra's own
  `get_mode` runs, and every error surfaces exactly as before, from `Hydra.run` / `multirun`.
* When the mode is None or RUN, the config is handed, once, to the next `load_configuration`
  of the same Hydra instance if that call is the expected one: RUN mode, the same config name,
  and the same overrides (plus `hydra.mode=RUN`, which is then applied to the kept config the
  way Hydra's loader applies an override: set the key, record it in `hydra.overrides.hydra`).
  Any other call (a multirun's, or a changed override list) composes normally.

The result is the config Hydra would have composed (a test compares the two, key by key).
`LOSSLAB_COMPOSE_ONCE=0` in the environment, or a Hydra other than 1.3.x (whose internals this
was written and tested against), leaves Hydra untouched.
"""

from __future__ import annotations

import os
from typing import Any

_MODE_RUN = "hydra.mode=RUN"
TESTED_HYDRA = "1.3."  # the Hydra versions whose internals this relies on (and tests check)
_installed: list[Any] = []  # [Hydra.get_mode as Hydra defines it] once installed
_handed_over = [0]  # compositions reused so far in this process


def reused() -> int:
    """How many compositions this process has reused (1 for a single run's entry point)."""
    return _handed_over[0]


def install() -> None:
    """Patch `Hydra.get_mode` (idempotent; no-op with LOSSLAB_COMPOSE_ONCE=0)."""
    if _installed or os.environ.get("LOSSLAB_COMPOSE_ONCE", "1") == "0":
        return
    import hydra

    if not hydra.__version__.startswith(TESTED_HYDRA):  # another Hydra: its own code path
        return
    from hydra._internal.hydra import Hydra

    _installed.append(Hydra.get_mode)
    Hydra.get_mode = _get_mode  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore Hydra's own `get_mode`."""
    if _installed:
        from hydra._internal.hydra import Hydra

        Hydra.get_mode = _installed.pop()  # type: ignore[method-assign]


def _has_sweeps(overrides: list[str]) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return any(o.is_sweep_override() for o in OverridesParser.create().parse_overrides(
            overrides))
    except Exception:  # a malformed override: let Hydra report it
        return True


def _get_mode(self: Any, config_name: str | None, overrides: list[str]) -> Any:
    """`Hydra.get_mode`, composing in RUN mode and keeping the config for `Hydra.run`."""
    from hydra.types import RunMode

    original = _installed[0] if _installed else None
    if original is None or _has_sweeps(overrides):
        return original(self, config_name, overrides) if original else None
    try:
        cfg = self.compose_config(config_name=config_name, overrides=list(overrides),
                                  with_log_configuration=False, run_mode=RunMode.RUN)
    except Exception:
        return original(self, config_name, overrides)
    mode = cfg.hydra.mode
    if mode is None or mode == RunMode.RUN:
        _hand_over(self.config_loader, cfg, config_name, list(overrides), mode is None)
    return mode


def _hand_over(loader: Any, cfg: Any, name: str | None, kept: list[str],
               mode_unset: bool) -> None:
    """Make `loader.load_configuration`'s next call return `cfg` if it asks for this config."""

    def load_configuration(config_name: str | None, overrides: list[str], run_mode: Any,
                           **kwargs: Any) -> Any:
        from hydra.types import RunMode

        del loader.load_configuration  # one call only: the class's method again
        extra = list(overrides[len(kept):])
        if run_mode != RunMode.RUN or config_name != name or list(overrides[:len(kept)]) != kept \
                or extra not in ([], [_MODE_RUN] if mode_unset else []):
            return loader.load_configuration(config_name=config_name, overrides=overrides,
                                             run_mode=run_mode, **kwargs)
        if extra:
            try:
                _apply_hydra_override(cfg, extra[0])
            except Exception:  # compose as Hydra would (and report what it reports)
                return loader.load_configuration(config_name=config_name, overrides=overrides,
                                                 run_mode=run_mode, **kwargs)
        _handed_over[0] += 1
        return cfg

    loader.load_configuration = load_configuration


def _apply_hydra_override(cfg: Any, line: str) -> None:
    """Apply one `hydra.*` override to a composed config as Hydra's loader does."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([line])
    ConfigLoaderImpl._apply_overrides_to_config(parsed, cfg)
    cfg.hydra.overrides.hydra.append(line)
