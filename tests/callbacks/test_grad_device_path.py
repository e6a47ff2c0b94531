"""The accelerator code path of the gradient callbacks, run on CPU.

On a GPU, `grad_stats` keeps the norms on the device (`GradStats.on_cpu` is False): the
monitor buffers device tensors and reads them with one transfer per flush, the health
detector keeps its window as tensors and reads one value per step only to catch a non-finite
one, and the update ratio takes the torch path. No GPU has been lent to this project, so this
test forces that path on CPU (`on_cpu` False, no native kernels) and checks that it logs the
same values and takes the same decisions as the CPU path, through a planted NaN step."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from losslab.callbacks import grad_stats as grad_stats_module
from losslab.callbacks.grad_health import GradHealth
from losslab.callbacks.grad_monitor import GradMonitor
from losslab.native import norms as native_norms
from tests.callbacks.test_grad_health import PlantNaN, fit, health_json

RUN = ["debug=limit", "logger=csv", "test=false", "trainer.log_every_n_steps=1",
       "callbacks.grad_monitor.update_ratio_every_n_steps=2",
       "callbacks.grad_health.on_non_finite=skip"]


def scalars(run: Path) -> dict[str, dict[int, float]]:
    """Every grad/* and weight/* series of the run's CSV log."""
    out: dict[str, dict[int, float]] = {}
    with open(run / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for tag, value in row.items():
                if tag.startswith(("grad/", "weight/")) and value not in ("", None):
                    out.setdefault(tag, {})[int(row["step"])] = float(value)
    return out


def force_device_path(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[bool]]:
    """Make every gradient statistic take the accelerator's path; record what the monitor
    and the health detector were handed."""
    seen: dict[str, list[bool]] = {"monitor_tensors": [], "health_tensors": []}

    def on_device(self: Any) -> None:
        self.on_cpu = False

    monkeypatch.setattr(grad_stats_module.GradStats, "__post_init__", on_device)
    monkeypatch.setattr(grad_stats_module.Layout, "host_norms", lambda self, grads: None)
    monkeypatch.setattr(grad_stats_module.Layout, "norm_plan", lambda self: None)  # FastStep's
    monkeypatch.setattr(native_norms, "norms", lambda tensors, numels=None: None)
    monkeypatch.setattr(native_norms.DiffNorms, "prepare", classmethod(lambda cls, b: None))
    flush, judge = GradMonitor.flush, GradHealth._flush

    def spy_flush(self: GradMonitor, trainer: Any) -> None:
        seen["monitor_tensors"] += [isinstance(p, torch.Tensor)
                                    for b in self._buffer for p in b[4]]
        flush(self, trainer)

    def spy_judge(self: GradHealth, trainer: Any, pl_module: Any, check: bool) -> None:
        seen["health_tensors"] += [isinstance(row, torch.Tensor) for _, row, _ in self._window]
        judge(self, trainer, pl_module, check)

    monkeypatch.setattr(GradMonitor, "flush", spy_flush)
    monkeypatch.setattr(GradHealth, "_flush", spy_judge)
    return seen


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=2e-5, abs_tol=1e-9)


def assert_same_scalars(a: dict[str, dict[int, float]], b: dict[str, dict[int, float]]) -> None:
    """The same grad/* and weight/* series (with the update ratio), at the same steps, with
    the same values (NaN where the other has NaN)."""
    assert set(a) == set(b) and "grad/update_ratio/model.head" in a
    for tag, series in a.items():
        assert series.keys() == b[tag].keys(), tag
        bad = {s: (v, b[tag][s]) for s, v in series.items() if not same(v, b[tag][s])}
        assert not bad, (tag, bad)


def test_the_device_path_logs_and_decides_as_the_cpu_path(make_cfg, tmp_path, monkeypatch):
    host_run, device_run = tmp_path / "host", tmp_path / "device"
    cfg = make_cfg(*RUN, f"paths.output_dir={host_run}")
    _, host_task = fit(cfg, PlantNaN(step=3))
    seen = force_device_path(monkeypatch)
    _, device_task = fit(make_cfg(*RUN, f"paths.output_dir={device_run}"), PlantNaN(step=3))

    assert seen["monitor_tensors"] and all(seen["monitor_tensors"])  # device tensors only
    assert seen["health_tensors"] and all(seen["health_tensors"])
    host = scalars(host_run)
    assert_same_scalars(host, scalars(device_run))
    assert math.isnan(host["grad/norm_total"][3])  # the planted NaN, logged by both
    events = [[(e["step"], e["kind"], e["layers"], e["action"]) for e in health_json(r)["events"]]
              for r in (host_run, device_run)]
    assert events[0] == events[1] == [(3, "non_finite", ["model.blocks.0.linear"], "skip")]
    assert health_json(device_run)["summary"]["skipped_steps"] == 1
    for a, b in zip(host_task.parameters(), device_task.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)  # the same steps were taken
