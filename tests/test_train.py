"""End-to-end runs through losslab.run.train on tiny budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from losslab.errors import UserError
from losslab.run import train

PAIRS = [
    ("mnist1d", "mlp", "ce"), ("mnist1d", "cnn1d", "ce"), ("digits", "mlp", "ce"),
    ("digits", "cnn2d", "ce"), ("breast_cancer", "mlp", "bce"), ("imbalanced", "mlp", "focal"),
    ("diabetes", "mlp", "mse"), ("synthetic_regression", "mlp", "mse"),
]


@pytest.mark.parametrize("data,model,loss", PAIRS)
def test_fast_dev_run_every_data_model_pair(make_cfg, data, model, loss):
    cfg = make_cfg(f"data={data}", f"model={model}", f"loss={loss}", "debug=fast_dev_run")
    metrics = train(cfg)
    out = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert out == pytest.approx(metrics)
    keys = {"test/mae", "test/rmse", "test/r2"} if data in ("diabetes", "synthetic_regression") \
        else {"test/acc", "test/f1", "test/ece"}
    assert keys | {"test/loss", "perf/fit_seconds", "perf/train_steps"} <= set(out)
    if data in ("breast_cancer", "imbalanced"):
        assert "test/auroc" in out


def test_short_run_writes_run_folder_and_improves(make_cfg, tmp_path):
    cfg = make_cfg("debug=limit", "trainer.limit_train_batches=10", "trainer.max_epochs=3")
    metrics = train(cfg)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run / "checkpoints").glob("best-epoch*.ckpt"))) == 1
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "provenance.json").is_file()
    assert metrics["perf/train_steps"] == 30
    assert metrics["test/from_checkpoint"] == 1.0
    assert metrics["val/acc_best"] >= metrics["val/acc"] - 1e-9
    assert metrics["test/acc"] > 0.2  # well above chance (0.1) after 30 steps


def test_resume_and_evaluate_only(make_cfg, tmp_path):
    first = make_cfg("debug=limit", "trainer.max_epochs=1")
    train(first)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 0
    resumed = make_cfg("debug=limit", "trainer.max_epochs=3", f"ckpt_path={last}",
                       f"paths.output_dir={tmp_path / 'resumed'}")
    metrics = train(resumed)
    assert metrics["perf/train_steps"] == 15  # 5 steps x 3 epochs, continuing from step 5
    ckpt = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 15

    evaluated = train(make_cfg("debug=limit", "train=false", f"ckpt_path={last}",
                               f"paths.output_dir={tmp_path / 'eval'}"))
    assert "test/acc" in evaluated and "perf/fit_seconds" not in evaluated


def test_bad_checkpoint_paths_are_user_errors(make_cfg, tmp_path):
    with pytest.raises(UserError, match="no checkpoint file"):
        train(make_cfg("train=false", f"ckpt_path={tmp_path / 'nope.ckpt'}"))
    first = make_cfg("debug=limit", "trainer.max_epochs=1", "model.hidden=[16]")
    train(first)
    other = make_cfg("debug=limit", "train=false", "model.hidden=[32]",
                     f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
                     f"paths.output_dir={tmp_path / 'eval'}")
    with pytest.raises(UserError, match="does not fit this model"):
        train(other)


@pytest.mark.parametrize("overrides,match", [
    (["loss=mse"], "loss 'mse' is a regression loss, but data 'mnist1d' is a classification"),
    (["loss=ce", "data=diabetes"], "loss 'ce' is a classification loss"),
    (["loss.name=focall"], "Unknown loss 'focall'.*Did you mean 'focal'"),
    (["optim.lr=-1"], "'lr' must be in"),
    (["data.batch_size=0"], "'batch_size' must be a positive integer"),
])
def test_config_mistakes_are_user_errors(make_cfg, overrides, match):
    with pytest.raises(UserError, match=match):
        train(make_cfg(*overrides, "debug=fast_dev_run"))
