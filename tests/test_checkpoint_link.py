"""last.ckpt saved in the same step as a top-k checkpoint is a hard link, not a second write."""

from __future__ import annotations

import os

import torch

from losslab.run import train


def test_last_is_linked_to_the_checkpoint_of_the_same_step(make_cfg, tmp_path) -> None:
    train(make_cfg("debug=limit", "logger=none", "callbacks.lr_monitor=null", "test=false",
                   "trainer.max_epochs=2", "callbacks.model_checkpoint.monitor=null"))
    folder = tmp_path / "run" / "checkpoints"
    last = folder / "last.ckpt"
    best = [p for p in folder.glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1 and last.exists()
    assert os.stat(best[0]).st_ino == os.stat(last).st_ino  # same bytes, written once
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and not list(folder.glob("*.tmp"))
