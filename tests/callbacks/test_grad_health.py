"""GradHealth: judging rules, actions, grad_health.json, and that skip/stop never let a NaN
gradient reach the weights (a NaN is planted at a chosen step)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as L
import pytest
import torch

from losslab.builders import instantiate_group
from losslab.callbacks.checkpoint import weights_are_finite
from losslab.callbacks.grad_health import GradHealth, GradientHealthError, scale_learning_rates
from losslab.errors import UserError
from losslab.run import build_task, build_trainer


# -- judging rules on the host (no training) --------------------------------------------------
def fake_trainer() -> Any:
    return SimpleNamespace(is_global_zero=True, should_stop=False, loggers=[], optimizers=[],
                           lr_scheduler_configs=[])


def judge(health: GradHealth, rows: list[tuple[float, float, list[float]]],
          names: tuple[str, ...] = ("l0", "l1", "l2")) -> Any:
    trainer = fake_trainer()
    health._names = names
    for step, (total, loss, layers) in enumerate(rows):
        health._judge_step(trainer, step, total, loss, layers)
        health._judge_vanishing(trainer, step, layers)
    return trainer


def test_vanishing_needs_patience_consecutive_checks_and_names_the_layers() -> None:
    health = GradHealth(vanish_below=1e-6, ratio_below=1e-3, patience=3)
    small = (1.0, 1.0, [1e-9, 1e-2, 1.0])
    ok = (1.0, 1.0, [0.5, 0.7, 1.0])
    judge(health, [small, small, ok, small, small])  # interrupted streak: no event
    assert health.counts["vanishing"] == 0
    judge(health, [small])  # third consecutive
    assert health.counts["vanishing"] == 1
    event = health.events[0]
    assert event["kind"] == "vanishing" and event["layers"] == ["l0"]
    assert event["values"]["l0"] == pytest.approx(1e-9)
    judge(health, [small, small])  # same episode: no new event
    assert health.counts["vanishing"] == 1
    ratio_only = (1.0, 1.0, [1e-5, 1e-4, 1.0])  # above vanish_below, but 1e-5 of the last layer
    health2 = GradHealth(vanish_below=1e-7, ratio_below=1e-3, patience=1)
    judge(health2, [ratio_only])
    assert health2.events[0]["layers"] == ["l0", "l1"]
    assert health2.events[0]["values"]["ratio_first_last"] == pytest.approx(1e-5)


def test_exploding_by_threshold_and_by_growth_over_the_running_average() -> None:
    health = GradHealth(explode_above=100.0, growth_factor=5.0, warmup_steps=3, ema_beta=0.5)
    judge(health, [(1.0, 1.0, [0.5, 0.5, 0.5])] * 3)
    assert health.counts["exploding"] == 0
    judge(health, [(4.0, 1.0, [1, 2, 3])])  # 4 < 5 x 1
    assert health.counts["exploding"] == 0
    judge(health, [(50.0, 1.0, [10, 40, 20])])  # 50 > 5 x running average
    assert health.counts["exploding"] == 1
    event = health.events[-1]
    assert event["layers"][0] == "l1" and "running average" in event["reason"]
    judge(health, [(500.0, 1.0, [1, 2, 3])])  # above explode_above
    assert health.counts["exploding"] == 2 and "explode_above" in health.events[-1]["reason"]


def test_non_finite_loss_or_gradients() -> None:
    health = GradHealth(on_non_finite="warn")
    judge(health, [(math.nan, 1.0, [1.0, math.nan, 1.0]), (1.0, math.inf, [1.0, 1.0, 1.0])])
    assert health.counts["non_finite"] == 2
    assert health.events[0]["layers"] == ["l1"] and health.events[0]["values"]["l1"] == "nan"
    assert health.events[1]["reason"] == "loss"


def test_the_hook_reads_the_loss_as_one_float_or_the_sum_of_several() -> None:
    """On CPU the step's row ends with the loss as a float: the usual 1-element loss (with its
    graph) read once, a loss of several elements (a caller's unreduced loss) summed."""
    net = torch.nn.Linear(3, 2)
    net(torch.randn(4, 3)).sum().backward()
    health = GradHealth(on_non_finite="warn", check_every_n_steps=100)
    trainer = SimpleNamespace(**vars(fake_trainer()), global_step=0, log_every_n_steps=100)
    health.on_before_backward(trainer, net, torch.tensor([1.5, 2.0]))
    health.on_before_optimizer_step(trainer, net, None)
    assert health._window[-1][1][-1] == 3.5
    trainer.global_step = 1
    health.on_before_backward(trainer, net, torch.tensor(0.25, requires_grad=True) * 2)
    health.on_before_optimizer_step(trainer, net, None)
    row = health._window[-1][1]
    assert row[-1] == 0.5 and row[0] == pytest.approx(
        math.sqrt(sum(float(p.grad.pow(2).sum()) for p in net.parameters())), rel=1e-6)


def test_raise_and_stop_actions() -> None:
    health = GradHealth(on_exploding="raise", explode_above=10.0)
    with pytest.raises(GradientHealthError, match="exploding gradients at step 0 in l2"):
        judge(health, [(20.0, 1.0, [1.0, 2.0, 19.0])])
    assert isinstance(GradientHealthError("x"), UserError)
    stopper = GradHealth(on_vanishing="stop", patience=1)
    trainer = judge(stopper, [(1.0, 1.0, [0.0, 1.0, 1.0])])
    assert trainer.should_stop and stopper.stopped


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="on_exploding.*Did you mean 'skip'"):
        GradHealth(on_exploding="skipp")
    with pytest.raises(UserError, match="on_vanishing.*cannot be 'skip'"):
        GradHealth(on_vanishing="skip")
    with pytest.raises(UserError, match="patience"):
        GradHealth(patience=0)


def test_reduce_lr_survives_the_scheduler() -> None:
    """OneCycleLR rebuilds the lr from max_lr/initial_lr every step: those are scaled too."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=100)
    for _ in range(10):
        opt.step()
        sched.step()
    lr = opt.param_groups[0]["lr"]
    trainer = SimpleNamespace(optimizers=[opt],
                              lr_scheduler_configs=[SimpleNamespace(scheduler=sched)])
    assert scale_learning_rates(trainer, 0.5) == [pytest.approx(lr * 0.5)]
    reference = torch.optim.SGD([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    ref_sched = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.1, total_steps=100)
    for _ in range(11):
        reference.step()
        ref_sched.step()
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * reference.param_groups[0]["lr"])


# -- real runs with a planted NaN --------------------------------------------------------------
class PlantNaN(L.Callback):
    """Makes one gradient entry NaN at optimizer step `step` (after backward, before the
    step), on the `call`-th backward of that step (LBFGS calls the closure several times)."""

    def __init__(self, step: int, call: int = 1) -> None:
        self.step, self.call, self._calls = step, call, 0

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self.step:
            return
        self._calls += 1
        if self._calls == self.call:
            p = next(p for p in pl_module.parameters() if p.grad is not None)
            p.grad.view(-1)[0] = float("nan")


class Snapshot(L.Callback):
    """Copies of the weights (and Adam's step count) just before and after step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.before: list[torch.Tensor] = []
        self.after: list[torch.Tensor] = []
        self.adam_steps: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            self.before = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.step + 1 and not self.after:
            self.after = [p.detach().clone() for p in pl_module.parameters()]
            state = trainer.optimizers[0].state
            self.adam_steps = [float(s["step"]) for s in state.values() if "step" in s]


def fit(cfg: Any, *extra: L.Callback) -> tuple[L.Trainer, Any]:
    L.seed_everything(int(cfg.seed), verbose=False)
    task, dm = build_task(cfg)
    callbacks = [*instantiate_group(cfg.callbacks, "callback"), *extra]
    trainer = build_trainer(cfg, callbacks, instantiate_group(cfg.logger, "logger"))
    trainer.fit(task, datamodule=dm)
    return trainer, task


def health_json(run: Path) -> dict[str, Any]:
    return json.loads((run / "grad_health.json").read_text())


def checkpoints_are_finite(run: Path) -> list[str]:
    names = []
    for path in (run / "checkpoints").glob("*.ckpt"):
        state = torch.load(path, weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
        names.append(path.name)
    return names


LIMIT = ["debug=limit", "logger=none", "callbacks.lr_monitor=null", "test=false"]


def test_skip_keeps_a_nan_step_out_of_the_weights_and_the_optimizer(make_cfg, tmp_path) -> None:
    snap = Snapshot(step=3)
    trainer, task = fit(make_cfg(*LIMIT, "callbacks.grad_health.on_non_finite=skip"),
                        PlantNaN(step=3), snap)
    assert trainer.global_step == 10
    assert weights_are_finite(task)
    for a, b in zip(snap.before, snap.after, strict=True):
        assert torch.equal(a, b)  # the step was vetoed: no change at all
    assert set(snap.adam_steps) == {3.0}  # Adam's state did not advance either
    report = health_json(tmp_path / "run")
    assert report["summary"]["skipped_steps"] == 1
    assert report["summary"]["events"]["non_finite"] == 1
    event = report["events"][0]
    assert (event["step"], event["kind"], event["action"]) == (3, "non_finite", "skip")
    assert event["layers"] == ["model.blocks.0.linear"] and event["values"]["norm_total"] == "nan"
    assert "last.ckpt" in checkpoints_are_finite(tmp_path / "run")


def test_without_skip_the_nan_reaches_the_weights_but_no_checkpoint(make_cfg, tmp_path) -> None:
    """The control: with on_non_finite=warn the planted NaN poisons the weights (so the test
    above would fail without the veto), and FiniteCheckpoint writes nothing non-finite."""
    trainer, task = fit(make_cfg(*LIMIT, "callbacks.grad_health.on_non_finite=warn"),
                        PlantNaN(step=3))
    assert not weights_are_finite(task)
    report = health_json(tmp_path / "run")
    assert report["summary"]["skipped_steps"] == 0
    assert report["events"][0]["action"] == "warn"
    assert report["summary"]["events"]["non_finite"] >= 1
    checkpoints_are_finite(tmp_path / "run")  # asserts every written checkpoint is finite


def test_stop_ends_the_run_gracefully_with_finite_weights(make_cfg, tmp_path) -> None:
    cfg = make_cfg(*LIMIT, "trainer.max_epochs=3", "callbacks.grad_health.on_non_finite=stop")
    trainer, task = fit(cfg, PlantNaN(step=6))  # epoch 1 (min_epochs=1 is met)
    assert trainer.global_step == 7  # the NaN step was vetoed, then the run stopped
    assert weights_are_finite(task)
    summary = health_json(tmp_path / "run")["summary"]
    assert summary["stopped"] and "non_finite at step 6" in summary["stop_reason"]
    assert summary["skipped_steps"] == 1
    assert "last.ckpt" in checkpoints_are_finite(tmp_path / "run")


def test_raise_is_a_user_error_and_the_report_is_written(make_cfg, tmp_path) -> None:
    cfg = make_cfg(*LIMIT, "callbacks.grad_health.on_non_finite=raise")
    with pytest.raises(GradientHealthError, match="non-finite gradients at step 2"):
        fit(cfg, PlantNaN(step=2))
    assert health_json(tmp_path / "run")["events"][0]["action"] == "raise"


def test_lbfgs_veto_in_a_later_closure_call_restores_the_weights(make_cfg, tmp_path) -> None:
    """LBFGS moves the weights between closure calls; a veto there must undo those moves."""
    snap = Snapshot(step=2)
    cfg = make_cfg(*LIMIT, "optim=lbfgs", "optim.max_iter=4", "scheduler=none",
                   "model.dropout=0.0", "trainer.max_epochs=1")
    trainer, task = fit(cfg, PlantNaN(step=2, call=3), snap)
    for a, b in zip(snap.before, snap.after, strict=True):
        assert torch.equal(a, b)
    assert weights_are_finite(task)
    assert health_json(tmp_path / "run")["summary"]["skipped_steps"] == 1
