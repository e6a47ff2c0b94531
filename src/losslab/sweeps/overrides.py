"""Hydra override strings as (key, value) pairs, and the current job's overrides."""

from __future__ import annotations

# keys that repeat an experiment (averaged over in the summary) rather than change it
REPEAT_KEYS = ("data.fold", "seed")


def parse_override(text: str) -> tuple[str, str]:
    """'optim.lr=0.01' -> ('optim.lr', '0.01'); '+a.b=1' -> ('a.b', '1'); '~x' -> ('x', '')."""
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def parse_overrides(items: list[str]) -> dict[str, str]:
    """Override strings -> {key: value} (the last one of a key wins, as in Hydra)."""
    return dict(parse_override(str(i)) for i in items)


def job_overrides() -> list[str]:
    """The running Hydra job's task overrides (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [str(o) for o in HydraConfig.get().overrides.task]
