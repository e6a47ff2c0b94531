"""summary.csv (every metric of every job) and summary.md (the headline metrics, failures and
mean ± std over folds/seeds) of a sweep."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

from losslab.sweeps.aggregate import (
    aggregate,
    common_overrides,
    format_mean_std,
    varying_keys,
)
from losslab.sweeps.jobs import JobRecord
from losslab.sweeps.overrides import REPEAT_KEYS

FIT = "perf/fit_seconds"


def optimized_metric(records: list[JobRecord]) -> str | None:
    """The sweep's optimized metric (the most common one of its jobs)."""
    names = Counter(r.optimized_metric for r in records if r.optimized_metric)
    return names.most_common(1)[0][0] if names else None


def headline_metrics(records: list[JobRecord]) -> list[str]:
    """The columns of summary.md: best optimized metric, test metrics, fit time."""
    present = {k for r in records for k in r.metrics}
    metric = optimized_metric(records)
    out = [m for m in (f"{metric}_best", metric) if metric and m in present][:1]
    out += sorted(k for k in present if k.startswith("test/") and k != "test/from_checkpoint")
    return out + ([FIT] if FIT in present else [])


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e4 else f"{value:.4g}"


def _short(value: str) -> str:
    """'0.0008468008575248334' -> '0.0008468' (override values in summary.md only)."""
    if any(c in value for c in ".eE"):
        try:
            return f"{float(value):.4g}"
        except ValueError:
            pass
    return value


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def override_text(overrides: dict[str, str], keys: list[str] | None = None) -> str:
    """'loss=ce optim=sgd' for the given keys (all when None)."""
    keys = list(overrides) if keys is None else keys
    return " ".join(f"{k}={overrides[k]}" for k in keys if k in overrides)


def write_csv(records: list[JobRecord], path: Path) -> None:
    """One row per job: job, each varying override, overrides, status, error, every metric."""
    varying = varying_keys(records)
    metrics = sorted({k for r in records for k in r.metrics})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["job", *varying, "overrides", "status", "error", "fit_seconds",
                         *metrics])
        for r in records:
            writer.writerow([r.name, *(r.overrides.get(k, "") for k in varying),
                             override_text(r.overrides), r.status, r.error,
                             _fmt(r.fit_seconds),
                             *(repr(r.metrics[m]) if m in r.metrics else "" for m in metrics)])


def markdown(records: list[JobRecord], title: str) -> str:
    """The summary.md text."""
    varying = varying_keys(records)
    metrics = headline_metrics(records)
    n_failed = sum(not r.ok for r in records)
    common = override_text(common_overrides(records))
    lines = [f"# Sweep summary: {title}", "",
             f"{len(records)} job{'s' * (len(records) != 1)}: {len(records) - n_failed} ok, "
             f"{n_failed} failed."]
    if common:
        lines += ["", f"Common overrides: `{common}`"]
    head = ["job", *varying, "status", *metrics, "error"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        row = [r.name, *(_short(r.overrides.get(k, "")) for k in varying), r.status,
               *(_fmt(r.metrics.get(m)) for m in metrics), r.error]
        lines.append("| " + " | ".join(_cell(str(c)) for c in row) + " |")
    groups = aggregate(records, [m for m in metrics if m != FIT] + [FIT] * (FIT in metrics))
    if groups:
        over = ", ".join(k for k in REPEAT_KEYS if k in varying)
        keys = [k for k in varying if k not in REPEAT_KEYS]
        head = [*keys, "ok jobs", *metrics]
        lines += ["", f"## Mean ± std over {over}", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for g in groups:
            row = [*(g.overrides.get(k, "") for k in keys), f"{g.n_ok}/{len(g.jobs)}",
                   *(format_mean_std(g.stats[m]) for m in metrics)]
            lines.append("| " + " | ".join(_cell(str(c)) for c in row) + " |")
    return "\n".join(lines) + "\n"
