"""The jobs of a sweep folder as records: overrides, status, one-line error, final metrics."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from losslab.sweeps.failures import divergence, read_error
from losslab.sweeps.overrides import parse_overrides


@dataclass
class JobRecord:
    """One job of a sweep, read back from its folder."""

    name: str                         # the job folder relative to the sweep folder ("0", "1")
    path: Path
    overrides: dict[str, str]         # key -> value, from .hydra/overrides.yaml
    status: str                       # "ok" | "failed"
    error: str = ""                   # one line when failed
    metrics: dict[str, float] = field(default_factory=dict)  # metrics.json
    optimized_metric: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def fit_seconds(self) -> float | None:
        return self.metrics.get("perf/fit_seconds")


def _natural_key(path: Path) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.as_posix())]


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders under `sweep_dir` that Hydra ran a job in (they hold .hydra/overrides.yaml)."""
    found = {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    found.discard(sweep_dir)
    return sorted(found, key=lambda p: _natural_key(p.relative_to(sweep_dir)))


def _optimized_metric(job: Path) -> str | None:
    path = job / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    try:
        value = OmegaConf.select(OmegaConf.load(path), "optimized_metric")
    except Exception:  # noqa: BLE001 (an unresolvable interpolation: no metric to check)
        return None
    return None if value is None else str(value)


def read_job(job: Path, sweep_dir: Path) -> JobRecord:
    """The record of the job in folder `job`."""
    overrides = parse_overrides(OmegaConf.load(job / ".hydra" / "overrides.yaml") or [])
    record = JobRecord(job.relative_to(sweep_dir).as_posix(), job, overrides, "ok",
                       optimized_metric=_optimized_metric(job))
    metrics_path = job / "metrics.json"
    error = read_error(job)
    if metrics_path.is_file():
        try:
            record.metrics = {k: float(v) for k, v in json.loads(metrics_path.read_text()).items()}
        except (OSError, ValueError, TypeError):
            error = error or "unreadable metrics.json"
    elif error is None:
        error = "no metrics.json (the job did not finish)"
    error = error or divergence(record.metrics, record.optimized_metric)
    if error is not None:
        record.status, record.error = "failed", error
    return record


def collect_jobs(sweep_dir: str | Path) -> list[JobRecord]:
    """All job records of a sweep folder, in job order."""
    root = Path(sweep_dir)
    return [read_job(job, root) for job in job_dirs(root)]
