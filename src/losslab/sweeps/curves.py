"""One plot of a validation metric against the step for every job of a sweep, read from each
job's TensorBoard event files."""

from __future__ import annotations

import logging
from pathlib import Path

from losslab.sweeps.jobs import JobRecord

MAX_LEGEND = 16


def read_scalars(job_dir: Path, tag: str) -> tuple[list[int], list[float]]:
    """(steps, values) of scalar `tag` from every TensorBoard event folder under `job_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    quiet = logging.getLogger("tensorboard")  # its INFO lines would reach the last job's log
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))
    try:
        for folder in sorted({p.parent for p in job_dir.rglob("events.out.tfevents.*")}):
            acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
            acc.Reload()
            if tag in acc.Tags().get("scalars", []):
                points.update({e.step: e.value for e in acc.Scalars(tag)})
    finally:
        quiet.setLevel(level)
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def plot_curves(records: list[JobRecord], tag: str, path: Path,
                labels: dict[str, str] | None = None) -> bool:
    """Write the plot of `tag` vs step to `path` (matplotlib Agg); False when no job logged it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = 0
    for record in records:
        steps, values = read_scalars(record.path, tag)
        if not steps:
            continue
        label = (labels or {}).get(record.name, record.name)
        style = "-" if record.ok else "--"
        ax.plot(steps, values, style, marker="." if len(steps) < 30 else None,
                label=label if record.ok else f"{label} (failed)")
        drawn += 1
    if not drawn:
        return False
    ax.set_xlabel("step")
    ax.set_ylabel(tag)
    ax.set_title(f"{tag} per job ({drawn} jobs)")
    ax.grid(alpha=0.3)
    if drawn <= MAX_LEGEND:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return True
