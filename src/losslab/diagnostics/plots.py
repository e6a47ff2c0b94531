"""Figures of the diagnostics (matplotlib, Agg): saved as PNG and returned as RGB arrays for
TensorBoard's image tab."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def new_figure(width: float = 8.0, height: float = 5.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: Path) -> np.ndarray:
    """Write `fig` to `path` and return its pixels as uint8 [H, W, 3]."""
    fig.tight_layout()
    fig.savefig(path)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def plot_interpolation(alphas: Sequence[float], curves: dict[str, Sequence[float]], path: Path,
                       title: str) -> np.ndarray:
    """Loss along (1 - a) theta_0 + a theta_1, one line per split; a = 0 and 1 marked."""
    fig = new_figure()
    ax = fig.add_subplot()
    for label, values in curves.items():
        ax.plot(alphas, values, marker="." if len(alphas) <= 60 else None, label=label)
    for a, name in ((0.0, "initial"), (1.0, "final")):
        ax.axvline(a, color="grey", lw=0.8, ls="--")
        ax.text(a, 1.0, f" {name}", transform=ax.get_xaxis_transform(), va="top", fontsize=9)
    values = np.concatenate([np.asarray(v, dtype=float) for v in curves.values()])
    if np.all(values > 0) and values.max() / values.min() > 50:
        ax.set_yscale("log")
    ax.set_xlabel("a  (weights = (1 - a) initial + a final)")
    ax.set_ylabel("mean loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def plot_surface(coords: Sequence[float], grid: np.ndarray, path: Path, title: str) -> np.ndarray:
    """Filled contour of log10 loss over (a, b), the minimum found marked, and a 3-D view."""
    fig = new_figure(12.0, 5.0)
    a, b = np.meshgrid(np.asarray(coords), np.asarray(coords))
    z = np.log10(np.clip(grid, 1e-12, None))
    ax = fig.add_subplot(1, 2, 1)
    filled = ax.contourf(a, b, z, levels=30, cmap="viridis")
    ax.contour(a, b, z, levels=15, colors="white", linewidths=0.5, alpha=0.6)
    fig.colorbar(filled, ax=ax, label="log10 loss")
    ax.plot([0], [0], marker="*", color="red", markersize=12, label="trained weights")
    i, j = np.unravel_index(np.argmin(grid), grid.shape)
    ax.plot([a[i, j]], [b[i, j]], marker="x", color="white", markersize=8, label="grid minimum")
    ax.set_xlabel("a (direction 1, filter-normalised)")
    ax.set_ylabel("b (direction 2)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    ax3 = fig.add_subplot(1, 2, 2, projection="3d")
    ax3.plot_surface(a, b, z, cmap="viridis", linewidth=0, antialiased=True)
    ax3.set_xlabel("a")
    ax3.set_ylabel("b")
    ax3.set_zlabel("log10 loss")
    ax3.view_init(elev=35, azim=-60)
    return save(fig, path)
