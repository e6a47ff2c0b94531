"""Largest batch that fits in memory, found by Lightning's `Tuner.scale_batch_size`.

power: try b = init_val, 2 b, 4 b, ... (steps_per_trial steps each) until an out-of-memory
error, then keep the last size that ran. binsearch: the same doubling, then a binary search
between the last size that ran and the first that failed, minus a safety `margin` (5%).

Lightning sets the size through the data module's `batch_size` attribute (the in-memory
loader reads it when the loaders are rebuilt). It cannot see the length of an in-memory
loader, so the search is capped at the training split's size here (a larger batch would be
the whole split anyway); on a CPU there is usually no out-of-memory error below that cap.
(Lightning 2.6's power mode does not clamp its last doubling to `max_val`: it can return
2^k > max_val untried. The result is clamped to the cap here.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from losslab.errors import UserError, check_choice, check_range
from losslab.tuning.common import run_tuner, write_result


def check_batch_options(n_train: int, mode: str, init_val: int, steps_per_trial: int,
                        max_trials: int, max_val: int, margin: float) -> None:
    check_choice("tune", "mode", mode, ("power", "binsearch"))
    check_range("tune", "init_val", init_val, low=1)
    check_range("tune", "steps_per_trial", steps_per_trial, low=1)
    check_range("tune", "max_trials", max_trials, low=1)
    check_range("tune", "max_val", max_val, low=init_val)
    check_range("tune", "margin", margin, low=0, high=1, high_inclusive=False)
    if n_train < init_val:
        raise UserError(f"tune=batch_size: the training split has {n_train} samples, fewer than "
                        f"the search's start size tune.init_val={init_val}. Lower tune.init_val "
                        f"(at most {n_train}) or use a larger data set.")


@contextmanager
def constant_lr(task: Any) -> Iterator[None]:
    """No lr scheduler during the search: its trials step one optimizer many times, past the
    length a run-length schedule (onecycle, cosine) was built for; the real fit rebuilds it."""
    hparams = getattr(task, "hparams", {})
    saved = hparams.get("scheduler")
    if saved is not None:
        hparams["scheduler"] = {"name": "none"}
    try:
        yield
    finally:
        if saved is not None:
            hparams["scheduler"] = saved


def find_batch_size(cfg: DictConfig, trainer: Any, task: Any, dm: Any, out_dir: Path,
                    mode: str = "power", init_val: int = 2, steps_per_trial: int = 3,
                    max_trials: int = 25, max_val: int = 8192, margin: float = 0.05
                    ) -> dict[str, float]:
    """Search; write tune.json; return {"tune/batch_size": found}. Leaves dm.batch_size set to
    the found size (used when tune.apply=true)."""
    from lightning.pytorch.tuner import Tuner

    n_train = int(dm.info.sizes["train"])
    check_batch_options(n_train, mode, init_val, steps_per_trial, max_trials, max_val, margin)
    if trainer.fast_dev_run:
        raise UserError("tune=batch_size does not run under fast_dev_run (Lightning skips it).")
    configured = int(dm.batch_size)
    cap = min(int(max_val), n_train)
    with constant_lr(task):
        found = run_tuner("batch_size", lambda: Tuner(trainer).scale_batch_size(
            task, datamodule=dm, mode=mode, init_val=int(init_val),
            steps_per_trial=int(steps_per_trial), max_trials=int(max_trials), max_val=cap,
            margin=float(margin)))
    if found is None:
        raise UserError("tune=batch_size: Lightning found no batch size (see the log above).")
    found = min(int(found), cap)
    reached = found >= int(cap * (1 - margin)) if mode == "binsearch" else found >= cap
    limit = ("the training split's size" if cap == n_train else "tune.max_val") if reached \
        else "memory (the next size ran out) or tune.max_trials"
    write_result(out_dir, {"tuner": "batch_size", "batch_size": found, "mode": mode,
                           "configured_batch_size": configured, "train_samples": n_train,
                           "init_val": init_val, "max_val": max_val, "limited_by": limit})
    print(f"losslab: batch-size finder ({mode}): largest batch that fits = {found} "
          f"(limited by {limit}; training split {n_train} samples; configured "
          f"data.batch_size = {configured}). Train with it: tune.apply=true or "
          f"data.batch_size={found}.")
    dm.batch_size = found
    with open_dict(cfg):
        cfg.data.batch_size = found
    return {"tune/batch_size": float(found), "tune/batch_size_configured": float(configured)}
