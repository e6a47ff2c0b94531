"""FirstStepTimer: the wall-clock time at which the first training step starts (start-up cost).

    python train.py +callbacks.first_step._target_=losslab.callbacks.timing.FirstStepTimer \
        +callbacks.first_step.path=first_step.json

writes {"first_step_unix": <time.time()>, "gc_enabled": ..., "gc_frozen": ..., "deferred": [...],
"compositions_reused": ...} when the first training batch starts (the others: whether the
cyclic garbage collector is on, how many objects `gc.freeze()` moved out of its reach, which
deferred modules have not been loaded yet, see `losslab.startup`, and how many Hydra
compositions were saved, see `losslab.compose_once`); with
`stop=true` (the default) the run then ends after that step. `scripts/bench_startup.py` compares
it with the time the process was launched.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback

from losslab.compose_once import reused
from losslab.deferred_modules import still_deferred


class FirstStepTimer(Callback):
    """Records time.time() at the first on_train_batch_start into a JSON file."""

    def __init__(self, path: str = "first_step.json", stop: bool = True) -> None:
        self.path, self.stop, self.done = Path(path), stop, False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self.done:
            return
        self.done = True
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"first_step_unix": time.time(),
                                             "gc_enabled": gc.isenabled(),
                                             "gc_frozen": gc.get_freeze_count(),
                                             "deferred": still_deferred(),
                                             "compositions_reused": reused()}))
        if self.stop:
            trainer.should_stop = True
