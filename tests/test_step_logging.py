"""Per-step training scalars: logged on logging steps only, epoch means exact."""

from __future__ import annotations

import csv

import torch

from losslab.run import train
from losslab.tasks.step_logging import TrainScalars


def rows(run, tag):
    with open(run / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r[tag]) for r in csv.DictReader(f) if r.get(tag)}


def test_loss_steps_logged_on_logging_steps_and_epoch_values_per_epoch(make_cfg, tmp_path):
    metrics = train(make_cfg("debug=limit", "logger=csv", "test=false", "trainer.max_epochs=2",
                             "trainer.log_every_n_steps=2"))
    run = tmp_path / "run"
    steps = rows(run, "train/loss_step")
    assert sorted(steps) == [1, 3, 5, 7, 9]  # (step + 1) % 2 == 0 over 2 x 5 batches
    epochs = rows(run, "train/loss_epoch")
    assert len(epochs) == 2 and len(rows(run, "train/acc")) == 2
    assert 0.0 <= metrics["train/acc"] <= 1.0 and metrics["train/loss"] == metrics[
        "train/loss_epoch"]


def test_weighted_epoch_mean_is_exact() -> None:
    class Fake:
        _trainer = None
        logged: dict = {}

        def log(self, name, value, **kwargs):
            self.logged[name] = float(value)

    scalars, module = TrainScalars(), Fake()
    scalars.add_epoch_only("train/acc", torch.tensor(1.0), 3)   # 3 of 3 right
    scalars.add_epoch_only("train/acc", torch.tensor(0.0), 1)   # 0 of 1 right
    scalars.add(module, {"train/loss": torch.tensor(2.0)})
    scalars.add(module, {"train/loss": torch.tensor(4.0)})
    scalars.epoch_end(module)
    assert module.logged == {"train/acc": 0.75, "train/loss_epoch": 3.0, "train/loss": 3.0}
