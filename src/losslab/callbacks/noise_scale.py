"""NoiseScale: the gradient noise scale B_simple = tr(Σ) / |G|² (McCandlish et al. 2018).

G is the true gradient and Σ the per-sample gradient covariance; a batch of B samples gives
a gradient g_B with E|g_B|² = |G|² + tr(Σ)/B. Measuring |g|² at two batch sizes b < B
(the paper's appendix A.1) gives unbiased estimates

    |G|²  ≈ (B |g_B|² - b |g_b|²) / (B - b)
    tr(Σ) ≈ (|g_b|² - |g_B|²) / (1/b - 1/B)

Every `every_n_steps` optimizer steps, one training batch is cut into `chunks` equal parts of
b samples: |g_b|² is the mean squared norm of the chunk gradients and |g_B|² that of their mean
(the gradient of all B = chunks * b samples), from one extra forward/backward of the batch
(torch.autograd.grad of the mean data loss; the step's gradients are not touched). Both
estimates are averaged over measurements (bias-corrected EMA) before dividing, as in the
paper; single ratios are noisy and can be negative.

The extra pass does not change training: the RNG state and the model's buffers (BatchNorm
running statistics) are restored afterwards. Logged (every measurement, TensorBoard/CSV):
noise/b_simple (from the averages), noise/trace_sigma, noise/grad_sq, noise/b_simple_raw
(this measurement alone); per epoch noise/b_simple_epoch (also in metrics.json).

B_simple approximates the critical batch size: below it, doubling the batch nearly halves
the steps needed; far above it, extra samples per step are mostly wasted.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from losslab.callbacks.tensorboard import log_scalars
from losslab.errors import UserError, check_range


def chunk_grad_sq_norms(model: nn.Module, loss_fn: Any, x: Tensor, y: Tensor,
                        chunks: int) -> tuple[Tensor, Tensor, int, int]:
    """(mean_j |g_j|², |mean_j g_j|², b, B) for `chunks` chunks of b samples, B = chunks * b.

    g_j is the gradient of the mean per-sample loss over chunk j (`loss_fn` returns per-sample
    losses, reduction "none"); float32 on the parameters' device, no host transfer."""
    params = [p for p in model.parameters() if p.requires_grad]
    b = x.shape[0] // chunks
    total: list[Tensor] | None = None
    small = torch.zeros((), device=x.device, dtype=torch.float32)
    with torch.enable_grad():
        for j in range(chunks):
            part = slice(j * b, (j + 1) * b)
            loss = loss_fn(model(x[part]), y[part]).mean()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g.detach()
                     for p, g in zip(params, grads, strict=True)]
            small = small + _sq_norm(grads)
            if total is None:
                total = grads
            else:
                torch._foreach_add_(total, grads)
    assert total is not None
    torch._foreach_div_(total, float(chunks))
    return small / chunks, _sq_norm(total), b, b * chunks


def _sq_norm(tensors: list[Tensor]) -> Tensor:
    return torch.stack(torch._foreach_norm(tensors, 2.0, dtype=torch.float32)).square().sum()


def two_batch_estimates(small_sq: Tensor, big_sq: Tensor, b_small: int,
                        b_big: int) -> tuple[Tensor, Tensor]:
    """(|G|², tr(Σ)) from |g_b|² and |g_B|² at batch sizes b < B (unbiased)."""
    grad_sq = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return grad_sq, trace


class NoiseScale(Callback):
    """Estimates and logs B_simple = tr(Σ)/|G|² during training (see the module doc)."""

    def __init__(self, every_n_steps: int = 10, chunks: int = 4, ema: float = 0.95) -> None:
        owner = "callbacks.noise_scale"
        check_range(owner, "every_n_steps", every_n_steps, low=1)
        check_range(owner, "chunks", chunks, low=2)
        check_range(owner, "ema", ema, low=0, high=1, high_inclusive=False)
        self.every_n_steps, self.chunks, self.ema = int(every_n_steps), int(chunks), float(ema)
        self.reset()

    def reset(self) -> None:
        self._avg: Tensor | None = None   # [|G|², tr(Σ)] running averages
        self._weight = 0.0                # 1 - ema^n: bias correction
        self._last_step: int | None = None
        self.history: list[dict[str, float]] = []  # what was logged, per measurement

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(getattr(pl_module, "model", None), nn.Module) or \
                not callable(getattr(pl_module, "loss_fn", None)):
            raise UserError("callbacks.noise_scale needs a single-task run (a module with "
                            f"`model` and a per-sample `loss_fn`); {type(pl_module).__name__} "
                            "has none. Remove noise_scale from the callbacks.")
        self.reset()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step  # measure after steps, from here (resume too)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step  # optimizer steps taken so far
        if step == self._last_step:
            return  # no optimizer step in this batch (gradient accumulation)
        self._last_step = step
        x, y = batch[0], batch[1]
        if (step - 1) % self.every_n_steps or x.shape[0] < self.chunks:
            return
        values = self.measure(pl_module, x, y)
        if trainer.is_global_zero:
            values = dict(zip(values, torch.stack(list(values.values())).tolist(), strict=True))
            self.history.append({"step": float(step), **values})
            log_scalars(trainer, values, step)

    def measure(self, pl_module: L.LightningModule, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """One measurement on batch (x, y), without side effects on training."""
        model = pl_module.model
        buffers = [b.detach().clone() for b in model.buffers()]
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            small, big, b, B = chunk_grad_sq_norms(model, pl_module.loss_fn, x, y, self.chunks)
        with torch.no_grad():
            for saved, buf in zip(buffers, model.buffers(), strict=True):
                buf.copy_(saved)
        grad_sq, trace = two_batch_estimates(small, big, b, B)
        both = torch.stack([grad_sq, trace]).detach()
        self._avg = both * (1 - self.ema) if self._avg is None else \
            self._avg * self.ema + both * (1 - self.ema)
        self._weight = 1 - (1 - self._weight) * self.ema
        avg = self._avg / self._weight
        return {"noise/b_simple": avg[1] / avg[0], "noise/trace_sigma": avg[1],
                "noise/grad_sq": avg[0], "noise/b_simple_raw": trace / grad_sq}

    @property
    def b_simple(self) -> float | None:
        """The current (averaged) estimate, or None before the first measurement."""
        return self.history[-1]["noise/b_simple"] if self.history else None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._avg is not None:
            avg = self._avg / self._weight
            pl_module.log("noise/b_simple_epoch", avg[1] / avg[0], on_epoch=True)
