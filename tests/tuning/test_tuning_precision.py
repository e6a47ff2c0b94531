"""Mixed precision and gradient accumulation: gradient statistics and clipping stay correct.

The statistics (losslab.callbacks.grad_stats) must be read after AMP unscaling, on the
gradients the optimizer uses, and once per optimizer step (not per accumulated micro-batch).
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from losslab.builders import instantiate_group
from losslab.callbacks.grad_stats import grad_stats
from losslab.callbacks.group import iter_callbacks
from losslab.run import build_task, build_trainer

SHORT = ["trainer.max_epochs=1", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
         "trainer.log_every_n_steps=1", "model.hidden=[64, 64]", "model.dropout=0.0",
         "logger=csv", "callbacks.grad_monitor.histogram_every_n_steps=0",
         "callbacks.grad_monitor.heatmap_every_n_epochs=0", "scheduler=none"]


class Recorder(L.Callback):
    """After every other callback: the step's stats vs. the gradients themselves."""

    def __init__(self) -> None:
        self.stats, self.direct, self.after_step, self.steps = [], [], [], []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.direct.append(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
                           .item())
        self.stats.append(grad_stats(pl_module).total_norm.item())
        self.steps.append(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.after_step.append(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
                               .item())


def fit(cfg, plugins=None) -> tuple[Recorder, L.Trainer]:
    L.seed_everything(0, verbose=False)
    task, dm = build_task(cfg)
    rec = Recorder()
    callbacks = [*instantiate_group(cfg.callbacks, "callback"), rec]
    if plugins is None:
        trainer = build_trainer(cfg, callbacks, instantiate_group(cfg.logger, "logger"))
    else:  # a GradScaler on CPU (Lightning's 16-mixed has none there)
        from hydra.utils import instantiate

        trainer = instantiate(cfg.trainer, callbacks=callbacks, plugins=plugins, precision=None,
                              logger=instantiate_group(cfg.logger, "logger"))
    trainer.fit(task, datamodule=dm)
    return rec, trainer


@pytest.mark.parametrize("precision", [
    "bf16-mixed", "16-mixed-scaled-unfused", "16-mixed-scaled-fused"])
def test_mixed_precision_stats_are_unscaled_and_match_fp32(make_cfg, precision):
    ref, _ = fit(make_cfg(*SHORT, "+trainer.limit_train_batches=1"))
    if precision.startswith("16-mixed-scaled"):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
        plugins = [MixedPrecision("16-mixed", "cpu", scaler=scaler)]
        # fused=null (default) is turned off under a GradScaler, so the stats are unscaled
        fused = [] if precision.endswith("-fused") else ["++optim.fused=false"]
        rec, _ = fit(make_cfg(*SHORT, "+trainer.limit_train_batches=1", *fused), plugins)
    else:
        rec, _ = fit(make_cfg(*SHORT, "+trainer.limit_train_batches=1",
                              f"trainer.precision={precision}"))
    assert all(torch.isfinite(torch.tensor(rec.stats)))
    assert rec.stats == pytest.approx(rec.direct, rel=1e-5)  # stats = the grads used
    # same weights and batch: the low-precision forward changes the gradient only slightly;
    # read before unscaling it would be 4096x larger
    assert rec.stats[0] == pytest.approx(ref.stats[0], rel=0.05)


def test_explicit_fused_with_a_grad_scaler_is_refused(make_cfg):
    from losslab.errors import UserError

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    with pytest.raises(UserError, match="optim.fused=true"):
        fit(make_cfg(*SHORT, "+trainer.limit_train_batches=1", "++optim.fused=true"),
            [MixedPrecision("16-mixed", "cpu", scaler=scaler)])


def test_bf16_clipping_clips_the_unscaled_gradient(make_cfg):
    rec, trainer = fit(make_cfg(*SHORT, "+trainer.limit_train_batches=3",
                                "trainer.precision=bf16-mixed", "callbacks.grad_clip.mode=norm",
                                "callbacks.grad_clip.max_norm=0.05"))
    assert min(rec.stats) > 0.05  # every step needed clipping
    assert max(rec.after_step) <= 0.05 * (1 + 1e-4)
    clip = next(cb for cb in iter_callbacks(trainer.callbacks) if type(cb).__name__ == "GradClip")
    assert clip.clipper.last_before.item() == pytest.approx(rec.stats[-1], rel=1e-6)


def _logged_steps(run: Path, tag: str) -> list[int]:
    path = next(run.glob("**/metrics.csv"))
    with path.open() as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get(tag)]


def test_accumulation_reports_once_per_optimizer_step(make_cfg):
    cfg = make_cfg(*SHORT, "+trainer.limit_train_batches=8", "trainer.accumulate_grad_batches=4",
                   "callbacks=[default,noise_scale]", "callbacks.noise_scale.every_n_steps=1")
    rec, trainer = fit(cfg)
    assert trainer.global_step == 2
    assert rec.steps == [0, 1] and rec.stats == pytest.approx(rec.direct, rel=1e-5)
    run = Path(cfg.paths.output_dir)
    assert _logged_steps(run, "grad/norm_total") == [0, 1]
    noise = next(cb for cb in iter_callbacks(trainer.callbacks)
                 if type(cb).__name__ == "NoiseScale")
    assert [h["step"] for h in noise.history] == [1.0, 2.0]


def test_accumulated_gradient_is_the_mean_over_micro_batches(make_cfg):
    """The stats of an accumulated step see the sum of the micro-batch gradients (each loss
    divided by k), i.e. the gradient of the mean loss over all k * B samples."""
    one, _ = fit(make_cfg(*SHORT, "+trainer.limit_train_batches=1", "data.batch_size=64"))
    acc, _ = fit(make_cfg(*SHORT, "+trainer.limit_train_batches=2", "data.batch_size=32",
                          "trainer.accumulate_grad_batches=2"))
    # the loader's permutation depends on the seed and epoch only: 2 x 32 = the same 64 samples
    assert len(acc.stats) == 1 and acc.stats == pytest.approx(acc.direct, rel=1e-5)
    assert acc.stats[0] == pytest.approx(one.stats[0], rel=1e-4)
