"""The lessons' figures: bars with error bars and curves, written as small PNGs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bars(path: Path, labels: Sequence[str], values: Sequence[float], title: str, ylabel: str,
         errors: Sequence[float] | None = None, hline: float | None = None,
         log: bool = False) -> Path:
    """One bar per option (mean over seeds, std as error bar)."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(labels) + 2), 3.2))
    ax.bar(range(len(labels)), values, yerr=errors, capsize=3, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    if hline is not None:
        ax.axhline(hline, color="tab:red", ls="--", lw=1)
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def curves(path: Path, series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str,
           xlabel: str, ylabel: str, logy: bool = False, logx: bool = False) -> Path:
    """Several (x, y) curves on one chart."""
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), label=label, lw=1.4)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
