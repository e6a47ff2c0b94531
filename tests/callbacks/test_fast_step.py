"""FastStep (callbacks/fast_step.py): the gradient callbacks' shared per-step path.

A fit with it and one without it (`LOSSLAB_FAST_STEP=0`, the members' hooks every step) must
log the same values at the same steps, write the same heatmap and grad_health.json, and take
the same steps, through a planted NaN on a step FastStep would otherwise have kept for itself,
epoch ends between own steps, histograms, and an update-ratio interval that is not the check
interval."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from losslab.callbacks.clipping import GradClip
from losslab.callbacks.fast_step import NEVER, FastStep, next_multiple
from losslab.callbacks.grad_health import GradHealth
from losslab.callbacks.grad_monitor import GradMonitor
from losslab.callbacks.group import CallbackGroup, find_callback
from tests.callbacks.test_grad_device_path import assert_same_scalars, scalars
from tests.callbacks.test_grad_health import PlantNaN, fit, health_json

RUN = ["debug=limit", "logger=csv", "test=false", "trainer.max_epochs=3",
       "trainer.limit_train_batches=13", "trainer.log_every_n_steps=1",
       "callbacks.grad_monitor.update_ratio_every_n_steps=7",
       "callbacks.grad_monitor.histogram_every_n_steps=11",
       "callbacks.grad_health.on_non_finite=skip"]


def group_of(trainer: Any) -> CallbackGroup:
    return next(cb for cb in trainer.callbacks if isinstance(cb, CallbackGroup))


def test_next_multiple() -> None:
    assert [next_multiple(s, 10) for s in (-1, 0, 8, 9, 10)] == [9, 9, 9, 19, 19]
    assert [next_multiple(s, 1) for s in (0, 5)] == [1, 6]


@pytest.mark.parametrize(("extra", "steps"), [([], 39),
                                              (["trainer.accumulate_grad_batches=2"], 21)])
def test_fast_step_logs_and_decides_as_the_members_alone(make_cfg, tmp_path, monkeypatch,
                                                         extra: list[str], steps: int) -> None:
    runs = {}
    for mode in ("0", "1"):
        monkeypatch.setenv("LOSSLAB_FAST_STEP", mode)
        run = tmp_path / f"fast{mode}"
        trainer, task = fit(make_cfg(*RUN, *extra, f"paths.output_dir={run}"),
                            PlantNaN(step=14))
        runs[mode] = (run, trainer, task)
    (slow_run, slow, slow_task), (fast_run, fast, fast_task) = runs["0"], runs["1"]
    assert group_of(slow).fast is None
    assert fast.global_step == slow.global_step == steps
    fast_path = group_of(fast).fast
    assert fast_path is not None and not fast_path.rows  # everything handed over
    # most steps were FastStep's (own steps: flushes/checks every 10, ratios every 7,
    # histograms every 11, the NaN step and the first one)
    assert steps // 2 < fast_path.steps_fast < steps
    a = scalars(slow_run)
    assert_same_scalars(a, scalars(fast_run))
    assert len(a["grad/norm_total"]) == steps and math.isnan(a["grad/norm_total"][14])
    assert slow_run.joinpath("grad_health.json").read_text() \
        == fast_run.joinpath("grad_health.json").read_text()
    assert [e["step"] for e in health_json(fast_run)["events"]] == [14]
    maps = [find_callback(t, GradMonitor).heatmap() for t in (slow, fast)]
    assert maps[0][1] == maps[1][1]
    assert torch.allclose(torch.from_numpy(maps[0][0]), torch.from_numpy(maps[1][0]),
                          equal_nan=True)
    for p, q in zip(slow_task.parameters(), fast_task.parameters(), strict=True):
        assert torch.equal(p, q)  # the same steps were taken, bit for bit


@pytest.mark.parametrize(("mode", "every"), [("norm", 3), ("value", 3), ("per_param_norm", 3),
                                           ("agc", 3), ("auto", 3), ("norm", 1), ("value", 1)])
def test_fast_step_with_active_clipping_clips_and_logs_as_without(
        make_cfg, tmp_path, monkeypatch, mode: str, every: int) -> None:
    """Active clipping joins FastStep: the clipper still clips every step (from the module's
    hook), reads the norms FastStep computed (no second pass on its steps), and closes its
    window on logging steps, written every 10 steps; the weights and every logged value match
    a run without it."""
    from losslab.callbacks.grad_stats import Layout

    run = [*(a for a in RUN if a != "trainer.log_every_n_steps=1"),
           f"trainer.log_every_n_steps={every}", f"callbacks.grad_clip.mode={mode}",
           "callbacks.grad_clip.max_norm=0.3", "callbacks.grad_clip.clip_value=0.01"]
    passes = []
    real = Layout.host_norms
    monkeypatch.setattr(Layout, "host_norms", lambda self, g: passes.append(1) or real(self, g))
    runs = {}
    for fast in ("0", "1"):
        monkeypatch.setenv("LOSSLAB_FAST_STEP", fast)
        passes.clear()
        out = tmp_path / fast
        trainer, task = fit(make_cfg(*run, f"paths.output_dir={out}"), PlantNaN(step=14))
        runs[fast] = (scalars(out), task, len(passes), group_of(trainer).fast)
    (a, slow_task, slow_passes, _), (b, fast_task, fast_passes, fast_path) = runs["0"], runs["1"]
    assert fast_path is not None and 39 // 3 < fast_path.steps_fast < 39
    assert_same_scalars(a, b)
    # every logging step but 14: vetoed (NaN) before the clipper runs
    assert sorted(a["grad/clip_fraction"]) == [s for s in range(every - 1, 39, every) if s != 14]
    assert max(a["grad/clip_fraction"].values()) > 0
    for p, q in zip(slow_task.parameters(), fast_task.parameters(), strict=True):
        assert torch.equal(p, q)
    # one norm pass per step without FastStep; with it, none on the steps it kept
    assert slow_passes >= 39 and fast_passes <= slow_passes - fast_path.steps_fast


@pytest.mark.parametrize("override", ["callbacks.grad_health.on_exploding=skip",
                                      "callbacks.grad_monitor.update_ratio=false"])
def test_configurations_that_need_every_step_keep_the_members_hooks(make_cfg, tmp_path,
                                                                     override: str) -> None:
    """A veto on exploding judges every step before it runs; a monitor without the update
    ratio logs the weight norms on every logging step: FastStep stands aside (not armed)."""
    trainer, _ = fit(make_cfg(*RUN, override, f"paths.output_dir={tmp_path}"))
    fast_path = group_of(trainer).fast
    assert fast_path is None or fast_path.steps_fast == 0


def test_members_report_their_own_steps() -> None:
    class Trainer:
        log_every_n_steps = 1
        is_global_zero = True

    health = GradHealth(check_every_n_steps=10)
    assert [health.next_own_step(Trainer(), s) for s in (0, 9, 10)] == [9, 19, 19]
    monitor = GradMonitor(update_ratio_every_n_steps=7, histogram_every_n_steps=None)
    assert monitor.next_own_step(Trainer(), 0) == 6  # the update ratio comes first
    monitor.update_ratio = False
    assert monitor.next_own_step(Trainer(), 0) == 9  # the aligned flush: (9 + 1) % 10 == 0
    assert monitor.next_own_step(Trainer(), 9) == 19
    monitor._buffer = [(3, (), True, False, [[1.0]])]  # (after an epoch's end at step 2)
    assert monitor.next_own_step(Trainer(), 5) == 9
    monitor.log_every_n_steps = 3  # logging steps 2, 5, 8, 11, ...: spans 10 at step 14
    assert monitor.next_own_step(Trainer(), 5) == 14
    assert not GradMonitor(update_ratio=False).fast_ready(Trainer(), None)
    assert not GradHealth(on_exploding="skip").fast_ready(Trainer(), None)

    class Rank1(Trainer):
        is_global_zero = False

    assert monitor.next_own_step(Rank1(), 0) == NEVER
    clip = GradClip(mode="norm")  # its own steps: where closed windows may be written
    clip.clipper.log_every = 1
    assert clip.next_own_step(Trainer(), 0) == 9 and clip.next_own_step(Trainer(), 9) == 19
    clip.clipper.log_every = 3  # windows close at 2, 5, 8, 11, ...: they span 10 steps at 11
    assert clip.next_own_step(Trainer(), 0) == 11
    clip.clipper.closed = [(5, (), torch.zeros(1))]  # (after an epoch's end at step 4)
    assert clip.next_own_step(Trainer(), 5) == 14
    clip.clipper.log_every = 0  # not logging (a rank other than zero): every 10th step
    assert clip.next_own_step(Trainer(), 3) == 9
    assert clip.reads_grad_stats() and not GradClip(mode="none").reads_grad_stats()


def test_group_routes_the_per_step_hooks_to_fast_step(monkeypatch) -> None:
    group = CallbackGroup([GradMonitor(), GradHealth()])
    assert isinstance(group.fast, FastStep)
    assert group.on_before_optimizer_step == group.fast.on_before_optimizer_step
    assert "on_train_epoch_end" in group._sync and "on_train_end" in group._sync
    monkeypatch.setenv("LOSSLAB_FAST_STEP", "0")
    assert CallbackGroup([GradMonitor(), GradHealth()]).fast is None
