"""A callback for the DDP test of the gradient callbacks (test_grad_ddp.py): each rank writes
the L2 norm of the gradients its optimizer is about to use, per step, computed with torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch


class RankNorms(L.Callback):
    def __init__(self) -> None:
        self.norms: dict[int, float] = {}

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Any) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms[trainer.global_step] = float(torch.nn.utils.get_total_norm(grads))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(trainer.default_root_dir) / f"rank_norms_{trainer.global_rank}.json"
        path.write_text(json.dumps(self.norms))
