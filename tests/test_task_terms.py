"""Task-level loss terms: L1/L2 penalties, consistency, temperature annealing."""

from __future__ import annotations

import math

import pytest
import torch

from losslab.callbacks.temperature import temperature_at
from losslab.errors import UserError
from losslab.run import build_task, train
from losslab.tasks.consistency import make_augmentation


def test_l1_l2_penalties_match_hand_computation(make_cfg):
    cfg = make_cfg("task.regularization.l1=0.01", "task.regularization.l2=0.1")
    task, _ = build_task(cfg)
    weights = [p for p in task.model.parameters() if p.dim() > 1]
    terms = task.regularization_terms()
    assert terms["reg_l1"].item() == pytest.approx(0.01 * sum(w.abs().sum().item()
                                                             for w in weights), rel=1e-5)
    assert terms["reg_l2"].item() == pytest.approx(0.1 * sum(w.square().sum().item()
                                                            for w in weights), rel=1e-5)


def test_regularised_run_logs_terms_separately(make_cfg):
    metrics = train(make_cfg("debug=limit", "task.regularization.l2=1e-3",
                             "task.consistency.weight=0.5", "task.consistency.augmentation=shift"))
    logged = {"train/reg_l2_epoch", "train/consistency_epoch", "train/data_loss_epoch"}
    assert logged <= set(metrics)
    assert metrics["train/loss_epoch"] > metrics["train/data_loss_epoch"]


def test_shift_augmentation_rolls_each_sample():
    torch.manual_seed(0)
    x = torch.arange(10.0).repeat(4, 1, 1)  # [4, 1, 10]
    y = make_augmentation("shift", max_shift=3)(x)
    base = torch.arange(10.0)
    for row in y[:, 0]:
        assert any(torch.equal(row, torch.roll(base, s)) for s in range(-3, 4))
    with pytest.raises(UserError, match="augmentation"):
        make_augmentation("rotate")


@pytest.mark.parametrize("schedule,mid", [("linear", 2.5), ("exponential", 2.0),
                                          ("cosine", 2.5)])
def test_temperature_schedules(schedule, mid):
    assert temperature_at(0.0, 4.0, 1.0, schedule) == pytest.approx(4.0)
    assert temperature_at(1.0, 4.0, 1.0, schedule) == pytest.approx(1.0)
    assert temperature_at(0.5, 4.0, 1.0, schedule) == pytest.approx(mid)
    assert temperature_at(0.25, 4.0, 1.0, "cosine") == pytest.approx(1 + 3 * (1 + math.cos(
        math.pi / 4)) / 2)


def test_temperature_annealing_run(make_cfg):
    metrics = train(make_cfg("debug=limit", "callbacks=[default,temperature]",
                             "callbacks.rich_progress_bar=null",
                             "callbacks.rich_model_summary=null"))
    assert "test/acc" in metrics
    with pytest.raises(UserError, match="has none"):
        train(make_cfg("debug=limit", "data=diabetes", "loss=mse",
                       "callbacks=[default,temperature]", "callbacks.rich_progress_bar=null",
                       "callbacks.rich_model_summary=null"))


def test_a_nan_batch_makes_the_evaluation_loss_nan_and_best_skips_it(make_cfg, recwarn):
    """One NaN batch among finite ones: the epoch's val loss is NaN, not the mean of the
    finite batches (torchmetrics' default); the best monitored value ignores a NaN epoch;
    no warning either way."""
    task, _ = build_task(make_cfg())
    x = torch.randn(8, 1, 40)
    y = torch.randint(0, 10, (8,))
    x_nan = x.clone()
    x_nan[0, 0, 0] = float("nan")

    def epoch_loss(*inputs: torch.Tensor) -> float:
        for xb in inputs:
            task._eval_step((xb, y, torch.arange(8)), task.val_metrics, task.val_loss)
        return float(task._epoch_values("val", task.val_metrics, task.val_loss)["val/loss"])

    assert math.isnan(epoch_loss(x, x_nan))
    assert math.isfinite(epoch_loss(x))  # the next epoch starts afresh
    task.val_best.update(torch.tensor(0.4))
    task.val_best.update(torch.tensor(float("nan")))
    assert float(task.val_best.compute()) == pytest.approx(0.4)
    assert not [w for w in recwarn if "nan" in str(w.message).lower()]


def test_multitask_evaluation_losses_keep_nan(make_cfg):
    task, _ = build_task(make_cfg("data=multitask_synthetic", "model=multitask"))
    for metric in task.val_losses.values():
        metric.update(torch.tensor([1.0, float("nan")]))
        assert math.isnan(float(metric.compute()))
    task.val_best.update(torch.tensor(float("nan")))
    task.val_best.update(torch.tensor(0.5))
    assert float(task.val_best.compute()) == pytest.approx(0.5)
