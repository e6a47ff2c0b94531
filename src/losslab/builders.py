"""Config -> objects. Every group config is `name: <registry name>` plus parameters, or a Hydra
`_target_` for user code; errors from either path become one-paragraph UserErrors."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from losslab.errors import UserError
from losslab.registry import Registry


def to_dict(cfg: Any) -> dict[str, Any]:
    """DictConfig -> plain dict (lists become lists, resolved); dicts pass through."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg or {})


def build(registry: Registry[Any], cfg: Any, *args: Any, drop: tuple[str, ...] = (),
          **extra: Any) -> Any:
    """Build from `name` via the registry, or from `_target_` via hydra.utils.instantiate."""
    params = to_dict(cfg)
    for key in drop:
        params.pop(key, None)
    if "_target_" in params:
        from hydra.utils import instantiate

        params.pop("name", None)
        try:
            return instantiate(params, *args, **extra)
        except Exception as e:  # noqa: BLE001  (hydra wraps import and call errors)
            if isinstance(e.__cause__, UserError):
                raise e.__cause__ from None
            raise UserError(f"Could not instantiate {registry.kind} '{params['_target_']}': "
                            f"{e}") from e
    if "name" not in params:
        raise UserError(f"The {registry.kind} config needs a 'name' (one of "
                        f"{', '.join(registry.names())}) or a '_target_'.")
    name = params.pop("name")
    return registry.build(name, *args, **params, **extra)


def instantiate_group(cfg: Any, kind: str) -> list[Any]:
    """Instantiate every entry with a `_target_` of a callbacks/logger group (dict of dicts)."""
    from hydra.utils import instantiate

    objects = []
    for key, conf in to_dict(cfg).items():
        if isinstance(conf, dict) and "_target_" in conf:
            try:
                objects.append(instantiate(conf))
            except Exception as e:  # noqa: BLE001
                if isinstance(e.__cause__, UserError):  # hydra wraps errors raised in __init__
                    raise e.__cause__ from None
                raise UserError(f"Could not build {kind} '{key}' ({conf['_target_']}): {e}") \
                    from e
    return objects
