"""Mean ± std of the final metrics over the jobs that only differ by fold or seed."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from losslab.sweeps.jobs import JobRecord
from losslab.sweeps.overrides import REPEAT_KEYS


@dataclass
class Group:
    """Jobs sharing every varying override except the repeat keys (data.fold, seed)."""

    overrides: dict[str, str]                   # the shared varying overrides
    jobs: list[JobRecord]
    stats: dict[str, tuple[float, float, int]]  # metric -> (mean, std, n) over the ok jobs

    @property
    def n_ok(self) -> int:
        return sum(job.ok for job in self.jobs)


def varying_keys(records: list[JobRecord]) -> list[str]:
    """Override keys whose value differs between jobs (a key missing in a job counts)."""
    keys: list[str] = []
    for record in records:
        keys += [k for k in record.overrides if k not in keys]
    return [k for k in keys if len({r.overrides.get(k) for r in records}) > 1]


def common_overrides(records: list[JobRecord]) -> dict[str, str]:
    """Overrides every job shares (the sweep's fixed command-line arguments)."""
    varying = set(varying_keys(records))
    return {k: v for k, v in (records[0].overrides.items() if records else [])
            if k not in varying}


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std, n) of the finite values; std is NaN for fewer than two."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    std = statistics.stdev(finite) if len(finite) > 1 else math.nan
    return statistics.fmean(finite), std, len(finite)


def aggregate(records: list[JobRecord], metrics: list[str]) -> list[Group]:
    """Groups over the repeat keys, or [] when neither data.fold nor seed varies."""
    varying = varying_keys(records)
    if not any(k in REPEAT_KEYS for k in varying):
        return []
    group_keys = [k for k in varying if k not in REPEAT_KEYS]
    groups: dict[tuple[str | None, ...], list[JobRecord]] = {}
    for record in records:
        groups.setdefault(tuple(record.overrides.get(k) for k in group_keys), []).append(record)
    out = []
    for values, jobs in groups.items():
        ok = [j for j in jobs if j.ok]
        stats = {m: mean_std([j.metrics[m] for j in ok if m in j.metrics]) for m in metrics}
        shared = {k: v for k, v in zip(group_keys, values, strict=True) if v is not None}
        out.append(Group(shared, jobs, stats))
    return out


def format_mean_std(stat: tuple[float, float, int], digits: int = 4) -> str:
    """'0.8123 ± 0.0101' (or '0.8123' for one job, '–' for none)."""
    mean, std, n = stat
    if n == 0:
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
