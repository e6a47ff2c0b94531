"""Runs through the real framework: compose `conf/train.yaml` + overrides, call `train(cfg)`.

Every lesson run is what `python train.py <overrides>` would do, with the run folder under
`outputs/lessons/` (git-ignored), the progress bar off and a CSV logger so the curves can be read
back without TensorBoard. `RunResult` gives the metrics, the curves, the grad-health summary and
the best checkpoint's model.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from losslab.lessons import timing

ROOT = Path(__file__).resolve().parents[3]
QUIET = ["callbacks.rich_progress_bar=null", "callbacks.rich_model_summary=null",
         "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
         "logger=csv", timing.OVERRIDE]


def compose(overrides: list[str], out_dir: Path, data_dir: Path | None = None) -> DictConfig:
    """The composed `train` config, as `python train.py <overrides>` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    data = data_dir or ROOT / "data"
    with initialize_config_module("losslab.conf", version_base="1.3"):
        return hydra_compose("train", overrides=[f"paths.output_dir={out_dir}",
                                                 f"paths.data_dir={data}", *QUIET, *overrides])


@dataclass
class RunResult:
    """What one `train(cfg)` run left behind."""

    overrides: list[str]
    run_dir: Path
    cfg: DictConfig
    metrics: dict[str, float]
    seconds: float
    error: str | None = None
    _curves: dict[str, list[tuple[int, float]]] | None = field(default=None, repr=False)

    def get(self, key: str, default: float = math.nan) -> float:
        return float(self.metrics.get(key, default))

    @property
    def ok(self) -> bool:
        return self.error is None

    def curve(self, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs of a logged metric, from the CSV logger."""
        if self._curves is None:
            self._curves = read_csv_curves(self.run_dir / "csv" / "metrics.csv")
        return self._curves.get(key, [])

    def epoch_curve(self, key: str) -> list[tuple[int, float]]:
        """(epoch, value) pairs of an epoch-level metric (e.g. val/acc, train/loss_epoch)."""
        path = self.run_dir / "csv" / "metrics.csv"
        out: list[tuple[int, float]] = []
        if not path.is_file():
            return out
        with path.open() as f:
            for row in csv.DictReader(f):
                if row.get(key) not in (None, "") and row.get("epoch") not in (None, ""):
                    out.append((int(float(row["epoch"])), float(row[key])))
        return out

    def timing(self) -> list[dict[str, Any]]:
        return timing.read(self.run_dir)

    def grad_health(self) -> dict[str, Any]:
        path = self.run_dir / "grad_health.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def best_checkpoint(self) -> Path | None:
        found = sorted((self.run_dir / "checkpoints").glob("best-*.ckpt"))
        if not found:
            last = self.run_dir / "checkpoints" / "last.ckpt"
            return last if last.is_file() else None
        return found[-1]

    def load(self) -> tuple[Any, Any]:
        """(task, data module) with the best checkpoint's weights, in eval mode."""
        from losslab.run import build_task

        task, dm = build_task(self.cfg)
        ckpt = self.best_checkpoint()
        if ckpt is not None:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
            task.load_state_dict(state, strict=False)
        dm.setup("test")
        task.eval()
        return task, dm


def read_csv_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Every column of Lightning's CSV log as (step, value) pairs."""
    curves: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return curves
    with path.open() as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                curves.setdefault(key, []).append((step, float(value)))
    return curves


def run_dir_name(overrides: list[str]) -> str:
    """A readable, file-system-safe folder name for a list of overrides."""
    text = "_".join(o.split("=", 1)[-1] if o.startswith("experiment=") else o for o in overrides)
    safe = "".join(c if c.isalnum() or c in ".-_" else "-" for c in text) or "default"
    if len(safe) > 100:  # keep names short but distinct: a digest of the full overrides
        digest = hashlib.sha1("\0".join(overrides).encode()).hexdigest()[:8]
        safe = f"{safe[:90]}-{digest}"
    return safe


def train_run(overrides: list[str], out_root: Path, log: io.TextIOBase | None = None
              ) -> RunResult:
    """`python train.py <overrides>` in this process; its console output goes to train.txt."""
    from losslab.run import train

    out_dir = out_root / run_dir_name(overrides)
    cfg = compose(overrides, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    error = None
    metrics: dict[str, float] = {}
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            metrics = train(cfg)
    except Exception as e:  # noqa: BLE001 (a failed run is a measurement too)
        error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    seconds = time.perf_counter() - start
    (out_dir / "train.txt").write_text(buffer.getvalue())
    if log is not None:
        log.write(f"  {seconds:6.1f}s  python train.py {' '.join(overrides)}"
                  f"{'  FAILED: ' + error if error else ''}\n")
        log.flush()
    return RunResult(list(overrides), out_dir, cfg, metrics, seconds, error)
