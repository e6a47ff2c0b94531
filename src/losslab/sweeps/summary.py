"""The end-of-sweep summary: summary.csv, summary.md and curves.png in the sweep folder.

Written by the Hydra callback `SweepSummary` (conf/hydra/default.yaml) at the end of every
multirun, or afterwards by `python scripts/report.py <sweep folder>`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from losslab.sweeps.aggregate import varying_keys
from losslab.sweeps.curves import plot_curves
from losslab.sweeps.jobs import JobRecord, collect_jobs
from losslab.sweeps.tables import markdown, optimized_metric, override_text, write_csv


@dataclass
class SweepResult:
    """What the summary found: job counts and the files it wrote."""

    sweep_dir: Path
    records: list[JobRecord]
    files: list[Path] = field(default_factory=list)
    fail_exit: bool = True    # the sweep's `sweep_fail_exit`: exit non-zero when a job failed

    @property
    def n_jobs(self) -> int:
        return len(self.records)

    @property
    def failed(self) -> list[JobRecord]:
        return [r for r in self.records if not r.ok]


_last: SweepResult | None = None


def last_sweep() -> SweepResult | None:
    """The result of the last summary written in this process (read by cli.main)."""
    return _last


def write_summary(sweep_dir: str | Path, curves: bool = True) -> SweepResult:
    """Read every job folder of `sweep_dir`; write summary.csv, summary.md, curves.png."""
    root = Path(sweep_dir)
    records = collect_jobs(root)
    result = SweepResult(root, records)
    write_csv(records, root / "summary.csv")
    (root / "summary.md").write_text(markdown(records, root.as_posix()))
    result.files += [root / "summary.csv", root / "summary.md"]
    tag = optimized_metric(records) or "val/loss"
    if curves and records:
        varying = varying_keys(records)
        labels = {r.name: f"{r.name}: {override_text(r.overrides, varying)}".strip()
                  for r in records}
        if plot_curves(records, tag, root / "curves.png", labels):
            result.files.append(root / "curves.png")
    return result


class SweepSummary(Callback):
    """Hydra callback: write the sweep summary when a multirun ends, and remember whether a
    job failed (cli.main turns that into a non-zero exit code)."""

    def __init__(self, curves: bool = True) -> None:
        self.curves = curves

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _last
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            result = write_summary(sweep_dir, curves=self.curves)
        except Exception as e:  # noqa: BLE001 (a broken summary must not hide finished jobs)
            _say(f"sweep summary failed ({type(e).__name__}: {e}); rerun it with "
                 f"`python scripts/report.py {sweep_dir}`.")
            return
        result.fail_exit = bool(config.get("sweep_fail_exit", True))
        _last = result
        jobs = f"{result.n_jobs} job" + ("s" * (result.n_jobs != 1))
        _say(f"sweep summary: {jobs}, {len(result.failed)} failed -> "
             f"{sweep_dir / 'summary.md'}")
        for r in result.failed:
            _say(f"job {r.name} ({override_text(r.overrides)}) failed: {r.error}")


def _say(message: str) -> None:
    # print, not logging: after the jobs, the root logger still writes to the last job's log
    print(f"losslab: {message}", file=sys.stderr, flush=True)
