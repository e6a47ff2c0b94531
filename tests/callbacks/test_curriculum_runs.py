"""Curriculum end to end: a short run per strategy, the logged statistics and histograms, the
experiment preset, and symmetric label noise on the training split only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from losslab.callbacks.curriculum import STRATEGIES
from losslab.data import DATASETS
from losslab.data.noise import symmetric_label_noise
from losslab.errors import UserError
from losslab.run import train
from tests.conftest import DATA_DIR

TINY = ["debug=limit", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
        "test=false", "callbacks=none", "logger=none", "model.hidden=[32]",
        "+trainer.enable_checkpointing=false", "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false"]


def tiny_cfg(out: Path, *overrides: str):
    with initialize_config_module("losslab.conf", version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={out}",
                                           f"paths.data_dir={DATA_DIR}", *TINY, *overrides])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_short_run_per_strategy(tmp_path, strategy):
    metrics = train(tiny_cfg(tmp_path, f"curriculum={strategy}", "curriculum.difficulty=ema"))
    assert np.isfinite(metrics["train/loss_epoch"])
    if strategy == "none":
        assert not any(k.startswith("curriculum/") for k in metrics)
        return
    assert 0 < metrics["curriculum/active_fraction"] <= 1
    assert np.isfinite(metrics["curriculum/threshold"])
    if strategy == "self_paced_hard":  # lam0 = median of the first curriculum batch
        assert metrics["curriculum/active_fraction"] < 1


def test_noisy_run_logs_noise_share_and_histograms(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = train(tiny_cfg(tmp_path, "experiment=curriculum_label_noise", "curriculum=pacing",
                             "logger=tensorboard", "trainer.max_epochs=2",
                             "trainer.limit_train_batches=3", "curriculum.warmup_epochs=0"))
    assert 0 <= metrics["curriculum/noisy_weight_share"] < 1
    assert 0 < metrics["curriculum/fraction"] <= 1
    tags = set()
    for f in (tmp_path / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f), size_guidance={"histograms": 0})
        acc.Reload()
        tags |= set(acc.Tags()["histograms"])
    assert {"curriculum/weights", "curriculum/difficulty", "curriculum/difficulty_noisy",
            "curriculum/difficulty_clean"} <= tags


def test_experiment_preset_turns_noise_and_curriculum_on(tmp_path):
    cfg = tiny_cfg(tmp_path, "experiment=curriculum_label_noise")
    assert cfg.data.label_noise == 0.4 and cfg.curriculum.strategy != "none"
    cfg = tiny_cfg(tmp_path, "experiment=curriculum_label_noise", "curriculum=superloss")
    assert cfg.curriculum.strategy == "superloss"  # the command line wins over the preset


def test_label_noise_flips_exactly_the_fraction_of_train_labels_only():
    clean = DATASETS.build("mnist1d", data_dir=str(DATA_DIR), seed=3)
    noisy = DATASETS.build("mnist1d", data_dir=str(DATA_DIR), seed=3, label_noise=0.4)
    clean.setup(), noisy.setup()
    y0, y1 = clean.splits["train"][1], noisy.splits["train"][1]
    changed = y0 != y1
    assert changed.float().mean().item() == pytest.approx(0.4, abs=1 / len(y0))
    assert torch.equal(changed, noisy.noisy_train) and clean.noisy_train is None
    for split in ("val", "test"):
        assert torch.equal(clean.splits[split][1], noisy.splits[split][1])
        assert torch.equal(clean.splits[split][0], noisy.splits[split][0])
    assert torch.equal(clean.splits["train"][0], noisy.splits["train"][0])
    # uniform over the other classes; seeded
    y, flipped = symmetric_label_noise(np.zeros(30000, dtype=int), 1.0, 4, seed=0)
    assert flipped.all() and np.bincount(y, minlength=4)[0] == 0
    assert np.allclose(np.bincount(y, minlength=4)[1:] / 30000, 1 / 3, atol=0.01)
    again, _ = symmetric_label_noise(np.zeros(30000, dtype=int), 1.0, 4, seed=0)
    assert np.array_equal(y, again)


def test_label_noise_errors():
    with pytest.raises(UserError, match="'label_noise' must be in"):
        DATASETS.build("mnist1d", data_dir=str(DATA_DIR), label_noise=1.0)
    with pytest.raises(UserError, match="flips class labels"):
        DATASETS.build("diabetes", label_noise=0.1)
