"""tune=batch_size: Lightning's batch-size scaler through the data module's batch_size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from losslab.builders import instantiate_group
from losslab.errors import UserError
from losslab.run import build_task, build_trainer, train
from losslab.tuning import tune

SHORT = ["tune.steps_per_trial=1", "+trainer.limit_val_batches=1",
         "+trainer.limit_test_batches=1", "model.hidden=[32]", "trainer.max_epochs=1"]


def _tune_with_memory_limit(cfg, limit: int):
    """Run the tuner on a model that 'runs out of memory' above `limit` samples per batch."""
    task, dm = build_task(cfg)
    trainer = build_trainer(cfg, instantiate_group(cfg.callbacks, "callback"),
                            instantiate_group(cfg.logger, "logger"))
    forward = task.model.forward

    def limited(x):
        if x.shape[0] > limit and task.training:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB (simulated)")
        return forward(x)

    task.model.forward = limited
    return tune(cfg, trainer, task, dm, Path(cfg.paths.output_dir)), dm


def test_power_mode_finds_the_largest_power_of_two(make_cfg, capsys):
    cfg = make_cfg("tune=batch_size", *SHORT)
    metrics, dm = _tune_with_memory_limit(cfg, 100)
    assert metrics["tune/batch_size"] == 64 and dm.batch_size == 64
    assert metrics["tune/batch_size_configured"] == 100
    out = json.loads((Path(cfg.paths.output_dir) / "tune.json").read_text())
    assert out["batch_size"] == 64 and out["limited_by"].startswith("memory")
    assert "largest batch that fits = 64" in capsys.readouterr().out


def test_binsearch_mode_bisects_then_keeps_a_margin(make_cfg):
    cfg = make_cfg("tune=batch_size", "tune.mode=binsearch", "tune.margin=0.1", *SHORT)
    metrics, _ = _tune_with_memory_limit(cfg, 100)
    assert metrics["tune/batch_size"] == 90  # 100 ran, 101 did not; minus 10%


def test_search_is_capped_at_the_training_split(make_cfg):
    cfg = make_cfg("tune=batch_size", "data=breast_cancer", "loss=bce", "tune.apply=true",
                   *SHORT)
    metrics = train(cfg)
    assert metrics["tune/batch_size"] == 399 and cfg.data.batch_size == 399  # whole split
    assert metrics["perf/train_steps"] == 1 and "test/acc" in metrics  # trained with it


def test_start_size_larger_than_the_data_is_a_user_error(make_cfg):
    cfg = make_cfg("tune=batch_size", "data=breast_cancer", "loss=bce", "tune.init_val=512",
                   *SHORT)
    with pytest.raises(UserError, match="399 samples, fewer than.*tune.init_val=512"):
        train(cfg)
    with pytest.raises(UserError, match="'mode' must be one of"):
        train(make_cfg("tune=batch_size", "tune.mode=linear", *SHORT))
