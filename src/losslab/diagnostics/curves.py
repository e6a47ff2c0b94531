"""Learning curves of one run from its TensorBoard events: loss, metrics, per-layer gradient
norms and (when the sharpness callback ran) the Hessian's top eigenvalue and trace."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from losslab.diagnostics.plots import new_figure, save

Series = dict[str, tuple[np.ndarray, np.ndarray]]
SPLITS = ("train", "val", "test")


def load_scalars(run_dir: Path) -> Series:
    """Every scalar tag of every TensorBoard event folder under `run_dir`: tag -> (steps, values),
    sorted by step (for a step logged twice, the later event wins)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[str, dict[int, float]] = {}
    quiet = logging.getLogger("tensorboard")
    level = quiet.level
    quiet.setLevel(max(level, logging.WARNING))
    try:
        for folder in sorted({p.parent for p in run_dir.rglob("events.out.tfevents.*")}):
            acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
            acc.Reload()
            for tag in acc.Tags().get("scalars", []):
                points.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    finally:
        quiet.setLevel(level)
    out = {}
    for tag, values in points.items():
        steps = sorted(values)
        out[tag] = (np.asarray(steps), np.asarray([values[s] for s in steps], dtype=float))
    return out


def metric_names(series: Series) -> list[str]:
    """Metrics logged for train or val (acc, f1, ece, mae, ...): loss and *_best excluded."""
    names = set()
    for tag in series:
        split, _, name = tag.partition("/")
        if split in ("train", "val") and name and not name.startswith("loss") \
                and not name.endswith("_best") and "/" not in name:
            names.add(name)
    return sorted(names)


def _plot(ax, series: Series, tag: str, label: str | None = None, **style) -> bool:
    if tag not in series:
        return False
    steps, values = series[tag]
    ax.plot(steps, values, label=label or tag, marker="." if len(steps) <= 40 else None, **style)
    return True


def plot_loss(series: Series, path: Path, title: str) -> bool:
    """train loss per step (thin) and per epoch, val loss per epoch, against the step."""
    fig = new_figure()
    ax = fig.add_subplot()
    drawn = _plot(ax, series, "train/loss_step", "train/loss (step)", alpha=0.35, lw=0.8)
    for tag in ("train/loss_epoch", "train/loss", "val/loss"):
        drawn |= _plot(ax, series, tag)
    if not drawn:
        return False
    values = np.concatenate([series[t][1] for t in series if t.startswith(("train/loss",
                                                                           "val/loss"))])
    if np.all(values > 0) and values.max() / values.min() > 30:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss", title=f"loss: {title}")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)
    return True


def plot_metrics(series: Series, path: Path, title: str) -> bool:
    """One panel per metric with its train and val curves."""
    names = metric_names(series)
    if not names:
        return False
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = new_figure(5.0 * cols, 3.6 * rows)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        for split in ("train", "val"):
            _plot(ax, series, f"{split}/{name}", split)
        ax.set(xlabel="step", title=name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"metrics: {title}")
    save(fig, path)
    return True


def plot_grad_norms(series: Series, path: Path, title: str) -> bool:
    """||g_layer|| per layer (grad/norm/<layer>) and the total, log scale."""
    layers = sorted(t for t in series if t.startswith("grad/norm/"))
    if not layers:
        return False
    fig = new_figure()
    ax = fig.add_subplot()
    for tag in layers:
        _plot(ax, series, tag, tag[len("grad/norm/"):], lw=1.0)
    _plot(ax, series, "grad/norm_total", "total", color="black", ls="--", lw=1.2)
    if all(np.all(series[t][1] > 0) for t in layers):
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="||gradient||_2", title=f"gradient norm per layer: {title}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    save(fig, path)
    return True


def plot_sharpness(series: Series, path: Path, title: str) -> bool:
    """sharpness/top_eigenvalue and sharpness/hessian_trace against the step."""
    tags = [t for t in ("sharpness/top_eigenvalue", "sharpness/hessian_trace") if t in series]
    if not tags:
        return False
    fig = new_figure(5.0 * len(tags), 3.8)
    for i, tag in enumerate(tags):
        ax = fig.add_subplot(1, len(tags), i + 1)
        _plot(ax, series, tag, tag.split("/")[1])
        ax.set(xlabel="step", title=tag)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Hessian of the training loss: {title}")
    save(fig, path)
    return True


def plot_run(run_dir: Path, out_dir: Path) -> list[Path]:
    """Write loss.png, metrics.png, grad_norms.png, sharpness.png (those with data) to `out_dir`."""
    series = load_scalars(run_dir)
    if not series:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    title = run_dir.name
    files = []
    for name, plot in (("loss", plot_loss), ("metrics", plot_metrics),
                       ("grad_norms", plot_grad_norms), ("sharpness", plot_sharpness)):
        path = out_dir / f"{name}.png"
        if plot(series, path, title):
            files.append(path)
    return files


def summary_lines(series: Series) -> list[str]:
    """Last values of the loss and metric curves, as text."""
    lines = []
    for tag in ("train/loss_epoch", "val/loss", *(f"val/{m}" for m in metric_names(series))):
        if tag in series:
            steps, values = series[tag]
            lines.append(f"{tag:<24} last {values[-1]:.4g} (step {int(steps[-1])}), "
                         f"min {values.min():.4g}, max {values.max():.4g}")
    return lines
