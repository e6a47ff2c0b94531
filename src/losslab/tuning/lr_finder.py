"""Learning-rate range test (Smith 2017), run by Lightning's `Tuner.lr_find`.

The lr grows from `min_lr` to `max_lr` over `num_training` optimizer steps (exponentially:
lr_k = min_lr * (max_lr / min_lr)^(k / num_training)); the training loss is smoothed,
L_k = beta L_{k-1} + (1 - beta) loss_k (bias-corrected, beta = 0.98), and the search stops once
L_k > early_stop_threshold * min L. The suggestion is the lr of the steepest descent of the
curve as plotted, argmin_k dL/d(log lr) (exponential mode; dL/dlr in linear mode), first 10
and last point skipped. (Lightning's own `suggestion()` differentiates by lr even on the log
scale, which favours the noisy flat start; tune.json keeps it as `lightning_suggestion`.)
The weights, optimizer and loop state are restored afterwards, so a training run can follow
from the same initial state.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from losslab.errors import UserError, check_choice, check_range
from losslab.tuning.common import run_tuner, write_result

PLOT_FILE = "lr_find.png"


def check_lr_options(cfg: DictConfig, min_lr: float, max_lr: float, num_training: int,
                     mode: str) -> None:
    """The optimizer must have a learning rate; the search range must make sense."""
    optim = cfg.get("optim") or {}
    if optim.get("lr") is None:
        raise UserError(
            f"tune=lr_find: optimizer '{optim.get('name', optim.get('_target_', '?'))}' has no "
            "'lr' in its config (optim.lr is missing or null), so there is no learning rate to "
            "search. Set optim.lr=<start value> or use an optimizer with a learning rate "
            "(sgd, momentum, adam, adamw, rmsprop, ...).")
    check_range("tune", "min_lr", min_lr, low=0, low_inclusive=False)
    check_range("tune", "max_lr", max_lr, low=min_lr, low_inclusive=False)
    check_range("tune", "num_training", num_training, low=2)
    check_choice("tune", "mode", mode, ("exponential", "linear"))


def find_lr(cfg: DictConfig, trainer: Any, task: Any, dm: Any, out_dir: Path,
            min_lr: float = 1e-6, max_lr: float = 1.0, num_training: int = 100,
            mode: str = "exponential", early_stop_threshold: float | None = 4.0
            ) -> dict[str, float]:
    """Run the range test; save lr_find.png and tune.json; return {"tune/lr": suggestion}."""
    from lightning.pytorch.tuner import Tuner

    check_lr_options(cfg, min_lr, max_lr, num_training, mode)
    if trainer.fast_dev_run:
        raise UserError("tune=lr_find does not run under fast_dev_run (Lightning skips it); "
                        "use trainer.limit_train_batches / max_epochs for a short search.")
    finder = run_tuner("lr_find", lambda: Tuner(trainer).lr_find(
        task, datamodule=dm, min_lr=float(min_lr), max_lr=float(max_lr),
        num_training=int(num_training), mode=mode, early_stop_threshold=early_stop_threshold,
        update_attr=False))
    lrs = [float(v) for v in finder.results.get("lr", [])]
    losses = debias(finder.results.get("loss", []))
    finder.results["loss"] = losses
    suggestion = suggest(lrs, losses, mode)
    configured = float(cfg.optim.lr)
    plot = save_plot(out_dir / PLOT_FILE, lrs, losses, suggestion, configured, mode)
    write_result(out_dir, {"tuner": "lr_find", "suggested_lr": suggestion,
                           "configured_lr": configured, "min_lr": min_lr, "max_lr": max_lr,
                           "mode": mode, "steps": len(lrs),
                           "lightning_suggestion": finder.suggestion(), "lr": lrs, "loss": losses,
                           "plot": str(plot)})
    if suggestion is None:
        raise UserError(f"tune=lr_find: no suggestion from {len(lrs)} points (it needs at "
                        "least 12 finite losses). Raise tune.num_training, trainer.max_epochs "
                        "or trainer.limit_train_batches, or lower tune.max_lr if the loss "
                        f"diverged at once; the curve is in {plot}.")
    print(f"losslab: lr finder: suggested lr = {suggestion:.3g} (steepest descent of the "
          f"smoothed loss over {len(lrs)} steps, lr {min_lr:g} -> {max_lr:g}; configured "
          f"optim.lr = {configured:g}). Plot: {plot}. Train with it: tune.apply=true or "
          f"optim.lr={suggestion:.3g}.")
    apply_lr(cfg, task, float(suggestion))
    return {"tune/lr": float(suggestion), "tune/lr_configured": configured}


def suggest(lrs: list[float], losses: list[float], mode: str, skip_begin: int = 10,
            skip_end: int = 1) -> float | None:
    """lr at argmin_k dL/dx, x = log(lr) (exponential) or lr (linear), over finite points."""
    import torch

    pairs = [(lr, v) for lr, v in zip(lrs[skip_begin:len(lrs) - skip_end],
                                      losses[skip_begin:len(losses) - skip_end], strict=True)
             if math.isfinite(v)]
    if len(pairs) < 2:
        return None
    x = torch.tensor([math.log(lr) if mode == "exponential" else lr for lr, _ in pairs],
                     dtype=torch.float64)
    y = torch.tensor([v for _, v in pairs], dtype=torch.float64)
    slope = torch.gradient(y, spacing=[x])[0]
    return float(pairs[int(torch.argmin(slope))][0])


def debias(smoothed: list[float], beta: float = 0.98) -> list[float]:
    """Redo the bias correction of Lightning's smoothed losses: after k steps the running
    average a_k = beta a_{k-1} + (1 - beta) loss_k needs a_k / (1 - beta^k), but Lightning
    (2.6) divides by (1 - beta^(k+1)) (it counts steps from 1), which halves the first point
    and bends the start of the curve down; s_k (1 - beta^(k+1)) / (1 - beta^k) undoes it."""
    return [float(v) * (1 - beta ** (k + 1)) / (1 - beta ** k)
            for k, v in enumerate(smoothed, start=1)]


def apply_lr(cfg: DictConfig, task: Any, lr: float) -> None:
    """The task builds its optimizer from hparams.optim: the next fit uses `lr`."""
    task.hparams.optim["lr"] = lr
    with open_dict(cfg):
        cfg.optim.lr = lr


def save_plot(path: Path, lrs: list[float], losses: list[float], suggestion: float | None,
              configured: float, mode: str) -> Path:
    """Smoothed training loss vs lr (log x), the suggestion (red dot) and the configured lr."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(lrs, losses, color="C0", label="smoothed training loss")
    if mode == "exponential":
        ax.set_xscale("log")
    finite = [v for v in losses if math.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) - 0.05 * abs(min(finite)), min(max(finite), 4 * min(finite)) +
                    0.05 * abs(min(finite)) + 1e-12)
    if suggestion is not None and suggestion in lrs:
        i = lrs.index(suggestion)
        ax.plot([suggestion], [losses[i]], "o", color="red", markersize=8,
                label=f"suggestion {suggestion:.3g}")
    ax.axvline(configured, color="gray", linestyle="--", label=f"configured lr {configured:g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("learning-rate range test")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
