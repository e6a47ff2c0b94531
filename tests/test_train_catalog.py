"""Every optimizer and scheduler option trains end to end (one batch each)."""

from __future__ import annotations

import math

import pytest

from losslab.cli import group_options
from losslab.errors import UserError
from losslab.run import train


@pytest.mark.parametrize("optim", group_options("optim"))
def test_every_optimizer_trains(make_cfg, optim):
    metrics = train(make_cfg(f"optim={optim}", "model.dropout=0", "debug=fast_dev_run"))
    assert math.isfinite(metrics["train/loss_epoch"]) and "test/acc" in metrics


@pytest.mark.parametrize("scheduler", group_options("scheduler"))
def test_every_scheduler_trains(make_cfg, scheduler):
    extra = ["scheduler.monitor=val/loss"] if scheduler == "plateau" else []
    metrics = train(make_cfg(f"scheduler={scheduler}", "debug=fast_dev_run", *extra))
    assert math.isfinite(metrics["train/loss_epoch"])


def test_plateau_on_a_metric_never_logged_fails_at_start(make_cfg):
    with pytest.raises(UserError, match=r"'val/accc', which is never logged.*val/acc"):
        train(make_cfg("scheduler=plateau", "scheduler.monitor=val/accc", "debug=limit"))


def test_reference_adam_trains(make_cfg):
    metrics = train(make_cfg("optim=adam", "optim.impl=reference", "debug=fast_dev_run"))
    assert metrics["test/acc"] > 0


LOSS_DATA = {"bce": "breast_cancer", "hinge": "mnist1d", "quantile": "diabetes",
             "gaussian_nll": "diabetes", "huber": "diabetes", "smooth_l1": "diabetes",
             "log_cosh": "diabetes", "mae": "diabetes", "mse": "diabetes"}


@pytest.mark.parametrize("loss", group_options("loss"))
def test_every_loss_trains_on_data_of_its_kind(make_cfg, loss):
    data = LOSS_DATA.get(loss, "mnist1d")
    metrics = train(make_cfg(f"loss={loss}", f"data={data}", "debug=fast_dev_run"))
    key = "test/rmse" if data == "diabetes" else "test/acc"
    assert math.isfinite(metrics[key]) and math.isfinite(metrics["test/loss"])


@pytest.mark.parametrize("loss", ["triplet", "contrastive"])
def test_embedding_losses_are_evaluated_by_knn(make_cfg, loss):
    metrics = train(make_cfg(f"loss={loss}", "debug=limit", "trainer.limit_train_batches=20"))
    assert metrics["test/acc"] > 0.2  # k-NN accuracy of the embeddings, chance is 0.1
