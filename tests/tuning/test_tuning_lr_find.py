"""tune=lr_find: Lightning's lr range test on the run's trainer, plot + suggestion."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from losslab.errors import UserError
from losslab.run import train
from losslab.tuning.lr_finder import debias, suggest

SHORT = ["+trainer.limit_train_batches=10", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1", "tune.num_training=25", "model.hidden=[32]",
         "callbacks.grad_monitor.histogram_every_n_steps=0"]


def test_lr_find_writes_plot_and_suggestion_without_training(make_cfg, capsys):
    cfg = make_cfg("tune=lr_find", "trainer.max_epochs=3", *SHORT)
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert (run / "lr_find.png").stat().st_size > 1000
    result = json.loads((run / "tune.json").read_text())
    assert result["tuner"] == "lr_find" and result["steps"] == 25
    assert 1e-6 <= metrics["tune/lr"] <= 1.0 and metrics["tune/lr"] == result["suggested_lr"]
    assert "suggested lr" in capsys.readouterr().out
    assert not (run / "checkpoints").exists() and "test/acc" not in metrics  # search only


def test_lr_find_apply_trains_with_the_suggestion(make_cfg):
    cfg = make_cfg("tune=lr_find", "tune.apply=true", "trainer.max_epochs=3",
                   "scheduler=none", *SHORT)
    metrics = train(cfg)
    assert cfg.optim.lr == metrics["tune/lr"]
    assert "test/acc" in metrics and metrics["perf/train_steps"] == 30  # from step 0 again
    ckpt = next((Path(cfg.paths.output_dir) / "checkpoints").glob("last.ckpt"))
    import torch

    state = torch.load(ckpt, weights_only=False)
    assert state["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(
        metrics["tune/lr"])


def test_lr_find_needs_an_lr_and_a_range(make_cfg):
    with pytest.raises(UserError, match="has no 'lr'.*optim.lr"):
        train(make_cfg("tune=lr_find", "optim.lr=null", *SHORT))
    with pytest.raises(UserError, match="max_lr"):
        train(make_cfg("tune=lr_find", "tune.max_lr=1e-7", *SHORT))
    with pytest.raises(UserError, match="fast_dev_run"):
        train(make_cfg("tune=lr_find", "debug=fast_dev_run"))


def test_debias_undoes_lightnings_off_by_one():
    beta, losses = 0.98, [2.0, 1.0, 3.0, 0.5]
    avg, lightning = 0.0, []
    for k, v in enumerate(losses, start=1):  # what Lightning 2.6 records
        avg = beta * avg + (1 - beta) * v
        lightning.append(avg / (1 - beta ** (k + 1)))
    fixed = debias(lightning, beta)
    assert fixed[0] == pytest.approx(2.0)  # a one-point average is the point itself
    avg = 0.0
    for k, v in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * v
        assert fixed[k - 1] == pytest.approx(avg / (1 - beta ** k))


def test_suggest_is_steepest_descent_on_log_scale():
    lrs = [10 ** (-6 + 6 * k / 59) for k in range(60)]
    # flat, a steep drop centred at lr = 1e-2, then divergence
    losses = [2.0 - math.tanh(3 * (math.log10(lr) + 2)) for lr in lrs]
    assert suggest(lrs, losses, "exponential") == pytest.approx(1e-2, rel=0.3)
    assert suggest(lrs[:5], losses[:5], "exponential") is None
