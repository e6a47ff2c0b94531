"""Gradient clipping: global norm, value, per-parameter norm, AGC and AutoClip.

`GradClip` attaches a `GradientClipper` to the LightningModule as `pl_module.gradient_clipper`;
the module's `configure_gradient_clipping` hook (SupervisedTask) calls it. That hook runs after
`on_before_optimizer_step` (so after AMP unscaling and DDP's all-reduce) and right before the
optimizer uses the gradients, and only on stepping batches, so AMP and gradient accumulation
stay correct. Modes, for gradients g (per parameter g_p, per output unit g_i) and weights w:

* ``norm``: g <- g * min(1, c / ||g||_2)  (global L2 over all parameters; c = max_norm)
* ``value``: g <- clamp(g, -v, v) element-wise  (v = clip_value)
* ``per_param_norm``: g_p <- g_p * min(1, c / ||g_p||) for every parameter tensor
* ``agc`` (Brock et al. 2021, NFNets): per unit i (a row of a weight matrix / an output channel)
  g_i <- g_i * lambda * max(||w_i||, eps) / ||g_i||  where ||g_i|| / max(||w_i||, eps) > lambda.
  Following the paper, the final layer is not clipped (``agc_clip_last_layer: false``).
* ``auto`` (AutoClip, Seetharaman et al. 2020): ``norm`` clipping at c_t = the ``percentile``-th
  percentile of all total norms seen so far (this step's included; last ``history`` steps).
* ``none``: no clipping (Lightning's own ``trainer.gradient_clip_val`` still applies).

The total norm before clipping comes from `grad_stats` (no extra pass); after clipping it is
exact and free for norm/auto/per_param_norm, and measured with one fused norm pass on logging
steps for value/agc. The clipper closes its window on each logging step (the values stay on
the device, stacked into one tensor); GradClip writes the closed windows as the monitor writes
its rows (fast_step.FLUSH_SPAN: at log_every_n_steps=1, one host transfer per 10 steps), and
at every epoch end, at the end of training and on an exception.

GradClip implements FastStep's member side (fast_step.py): its per-step hook (writing the
closed windows) runs on its flush steps only; the clipping itself runs on every step from the
module's hook either way.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from losslab.callbacks.fast_step import FLUSH_SPAN, Row, flush_due, next_flush_step, next_multiple
from losslab.callbacks.grad_stats import GradStats, foreach_norms, grad_stats, reset_layout
from losslab.callbacks.tensorboard import log_scalar_runs
from losslab.callbacks.trainer_reads import forget, global_step, is_global_zero
from losslab.errors import UserError, check_choice, check_range

ClipMode = Literal["none", "norm", "value", "per_param_norm", "agc", "auto"]
Runs = list[tuple[tuple[str, ...], list[tuple[int, list[float]]]]]  # log_scalar_runs' input
MODES = ("none", "norm", "value", "per_param_norm", "agc", "auto")
_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_: c / (||g|| + 1e-6)


def unitwise_norm(x: Tensor) -> Tensor:
    """||x_i|| per output unit (dim 0) for matrices/kernels, keepdim; the whole norm for 0/1-D."""
    if x.dim() <= 1:
        return x.norm()
    return x.norm(dim=tuple(range(1, x.dim())), keepdim=True)


class GradientClipper:
    """Clips gradients in place; keeps on-device counts for `grad/clip_fraction`.

    With `log_every` > 0 the window closes by itself after the steps s with
    (s + 1) % log_every == 0 (its values measured then, kept on the device in `closed` until
    `take_closed`): when the next step's first call comes, or at `settle()`, so that an
    optimizer that re-evaluates its closure (LBFGS: several calls in one step) still closes
    one window per logging step. `measure_after` forces the after-clip measurement on every
    step."""

    def __init__(self, mode: ClipMode = "none", max_norm: float = 1.0, clip_value: float = 0.5,
                 agc_lambda: float = 0.01, agc_eps: float = 1e-3,
                 agc_clip_last_layer: bool = False, percentile: float = 10.0,
                 history: int = 10000) -> None:
        owner = "callbacks.grad_clip"
        check_choice(owner, "mode", mode, MODES)
        check_range(owner, "max_norm", max_norm, low=0, low_inclusive=False)
        check_range(owner, "clip_value", clip_value, low=0, low_inclusive=False)
        check_range(owner, "agc_lambda", agc_lambda, low=0, low_inclusive=False)
        check_range(owner, "agc_eps", agc_eps, low=0, low_inclusive=False)
        check_range(owner, "percentile", percentile, low=0, high=100)
        check_range(owner, "history", history, low=1)
        self.mode, self.max_norm, self.clip_value = mode, float(max_norm), float(clip_value)
        self.agc_lambda, self.agc_eps = float(agc_lambda), float(agc_eps)
        self.agc_clip_last_layer = bool(agc_clip_last_layer)
        self.percentile, self.history = float(percentile), int(history)
        self.measure_after = False
        self.log_every = 0  # set by GradClip (the logging interval; 0: `window()` only)
        self.reset()

    def reset(self) -> None:
        self.clipped_steps: Tensor | None = None  # device counter over the logging window
        self.window_steps = 0
        self.closed: list[tuple[int, tuple[str, ...], Tensor]] = []  # (step, tags, values)
        self._closing: int | None = None  # the logging step whose window closes next
        self._measure_now = False
        self.last_before: Tensor | None = None
        self.last_after: Tensor | None = None
        self.last_threshold: Tensor | None = None
        self._history: Tensor | None = None
        self._seen = 0

    @property
    def active(self) -> bool:
        return self.mode != "none"

    # -- the hook ------------------------------------------------------------------------------
    def clip(self, module: torch.nn.Module, optimizer: Any = None) -> None:
        """Clip the gradients of `module` in place (from configure_gradient_clipping)."""
        if not self.active:
            return
        stats = grad_stats(module)
        if stats is None:
            return
        if self._closing is not None and self._closing != stats.step:
            self.settle()  # the previous logging step's window, before this step counts
        every = self.log_every
        logging = bool(every) and (stats.step + 1) % every == 0
        self._measure_now = self.measure_after or logging
        with torch.no_grad():
            clipped, after = getattr(self, f"_clip_{self.mode}")(stats)
        self._record(stats, clipped, after)
        if logging:
            self._closing = stats.step

    def settle(self) -> None:
        """Close the window of the last logging step, if it is still open."""
        step, self._closing = self._closing, None
        if step is not None and (window := self._close()) is not None:
            self.closed.append((step, *window))

    def _record(self, stats: GradStats, clipped: Tensor, after: Tensor | None) -> None:
        c = clipped.to(torch.float32)
        self.clipped_steps = c if self.clipped_steps is None else self.clipped_steps + c
        self.window_steps += 1
        self.last_before, self.last_after = stats.total_norm, after

    def _scale_all(self, stats: GradStats, threshold: Tensor | float) -> tuple[Tensor, Tensor]:
        total = stats.total_norm
        coef = torch.clamp(threshold / (total + _EPS), max=1.0)
        torch._foreach_mul_(stats.grads, coef)
        return total > threshold, total * coef

    def _clip_norm(self, stats: GradStats) -> tuple[Tensor, Tensor | None]:
        self.last_threshold = stats.total_norm.new_tensor(self.max_norm)
        return self._scale_all(stats, self.max_norm)

    def _clip_auto(self, stats: GradStats) -> tuple[Tensor, Tensor | None]:
        total = stats.total_norm
        if self._history is None or self._history.device != total.device:
            self._history = torch.full((self.history,), float("nan"), device=total.device)
        self._history[self._seen % self.history] = torch.where(
            torch.isfinite(total), total, torch.full_like(total, float("nan")))
        self._seen += 1
        seen = self._history[:min(self._seen, self.history)]
        threshold = torch.nan_to_num(torch.nanquantile(seen, self.percentile / 100.0),
                                     nan=float("inf"))
        self.last_threshold = threshold
        return self._scale_all(stats, threshold)

    def _clip_value(self, stats: GradStats) -> tuple[Tensor, Tensor | None]:
        grads = stats.grads
        max_abs = torch.stack(torch._foreach_norm(grads, float("inf")))
        torch._foreach_clamp_min_(grads, -self.clip_value)
        torch._foreach_clamp_max_(grads, self.clip_value)
        return (max_abs > self.clip_value).any(), self._measured(grads)

    def _clip_per_param_norm(self, stats: GradStats) -> tuple[Tensor, Tensor | None]:
        norms = stats.param_grad_norms
        coefs = torch.clamp(self.max_norm / (norms + _EPS), max=1.0)
        torch._foreach_mul_(stats.grads, list(coefs.unbind(0)))
        return (norms > self.max_norm).any(), (norms * coefs).square().sum().sqrt()

    def _clip_agc(self, stats: GradStats) -> tuple[Tensor, Tensor | None]:
        skip = -1 if self.agc_clip_last_layer else len(stats.layer_names) - 1
        flags = []
        for p, layer in zip(stats.params, stats.param_layer_ids, strict=True):
            if layer == skip:
                continue
            g = p.grad
            assert g is not None
            max_norm = unitwise_norm(p.detach()).clamp_min(self.agc_eps) * self.agc_lambda
            g_norm = unitwise_norm(g)
            too_big = g_norm > max_norm
            g.mul_(torch.where(too_big, max_norm / g_norm.clamp_min(_EPS),
                               torch.ones_like(g_norm)))
            flags.append(too_big.any())
        clipped = torch.stack(flags).any() if flags else torch.zeros((), dtype=torch.bool)
        return clipped, self._measured(stats.grads)

    def _measured(self, grads: list[Tensor]) -> Tensor | None:
        return foreach_norms(grads).square().sum().sqrt() if self._measure_now else None

    def _close(self) -> tuple[tuple[str, ...], Tensor] | None:
        """The window's (tags, values) on the device: the share of its steps that clipped, and
        the last step's norms before/after clipping and threshold; then a new window."""
        out = None
        if self.window_steps and self.clipped_steps is not None:
            values = [self.clipped_steps / self.window_steps]
            names = ["grad/clip_fraction"]
            for name, t in (("grad/norm_total_before_clip", self.last_before),
                            ("grad/norm_total_after_clip", self.last_after),
                            ("grad/clip_threshold", self.last_threshold)):
                if t is not None:
                    names.append(name)
                    values.append(t.to(values[0].device, torch.float32))
            out = tuple(names), torch.stack(values)
        self.clipped_steps, self.window_steps = None, 0
        return out

    def window(self) -> dict[str, float]:
        """Close the window now: its values (one host transfer)."""
        self._closing = None
        window = self._close()
        return {} if window is None else dict(zip(window[0], window[1].tolist(), strict=True))

    def take_closed(self) -> Runs:
        """The windows closed since the last call, as runs of steps with the same tags (one
        host transfer for all of them)."""
        self.settle()
        closed, self.closed = self.closed, []
        if not closed:
            return []
        flat = torch.cat([values for _, _, values in closed]).tolist()
        runs: Runs = []
        start = 0
        for step, tags, _ in closed:
            if not runs or runs[-1][0] != tags:
                runs.append((tags, []))
            runs[-1][1].append((step, flat[start:start + len(tags)]))
            start += len(tags)
        return runs


class GradClip(Callback):
    """Gradient clipping as a config option (`callbacks.grad_clip.mode=norm`); see module doc.

    Logs, every `log_every_n_steps` (default: the trainer's), grad/norm_total_before_clip,
    grad/norm_total_after_clip (of the logging step), grad/clip_threshold (norm/auto) and
    grad/clip_fraction (share of steps in the window where anything was clipped), each at its
    logging step; they are written every 10 steps or so (see the module doc).
    """

    groupable = True  # dispatched with the other gradient callbacks (callbacks/group.py)

    def __init__(self, mode: ClipMode = "none", max_norm: float = 1.0, clip_value: float = 0.5,
                 agc_lambda: float = 0.01, agc_eps: float = 1e-3,
                 agc_clip_last_layer: bool = False, percentile: float = 10.0,
                 history: int = 10000, log_every_n_steps: int | None = None) -> None:
        self.clipper = GradientClipper(mode, max_norm, clip_value, agc_lambda, agc_eps,
                                       agc_clip_last_layer, percentile, history)
        self.log_every_n_steps = log_every_n_steps

    @cached_property
    def state_key(self) -> str:  # read on every hook call: computed once
        return f"GradClip[mode={self.clipper.mode}]"

    def _every(self, trainer: L.Trainer) -> int:
        return int(self.log_every_n_steps or trainer.log_every_n_steps or 0)

    def idle_hooks(self) -> frozenset[str]:
        """The logging hooks have nothing to do without clipping (read by CallbackGroup)."""
        if self.clipper.active:
            return frozenset()
        return frozenset({"on_train_batch_end", "on_train_epoch_end", "on_train_end",
                          "on_exception"})

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            forget(trainer)
        if stage != "fit" or not self.clipper.active:
            return
        if trainer.gradient_clip_val:
            raise UserError(
                f"callbacks.grad_clip.mode={self.clipper.mode} and trainer.gradient_clip_val="
                f"{trainer.gradient_clip_val} would clip twice; keep one (set "
                "trainer.gradient_clip_val=null or callbacks.grad_clip.mode=none).")
        from lightning.pytorch.utilities.model_helpers import is_overridden

        if not pl_module.automatic_optimization:
            raise UserError(
                f"callbacks.grad_clip.mode={self.clipper.mode}: this run uses manual "
                "optimization (e.g. optim=natural_gradient), where Lightning never calls "
                "configure_gradient_clipping; set callbacks.grad_clip.mode=none.")
        if not is_overridden("configure_gradient_clipping", pl_module):
            raise UserError(
                f"callbacks.grad_clip: {type(pl_module).__name__} does not override "
                "configure_gradient_clipping, so it cannot call the clipper; use "
                "losslab's SupervisedTask or trainer.gradient_clip_val.")
        self.clipper.reset()
        # windows close on logging steps, on the process that logs (the others only clip)
        self.clipper.log_every = self._every(trainer) if is_global_zero(trainer) else 0
        object.__setattr__(pl_module, "gradient_clipper", self.clipper)
        reset_layout(pl_module)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "gradient_clipper", None) is self.clipper:
            object.__delattr__(pl_module, "gradient_clipper")

    def flush(self, trainer: L.Trainer) -> None:
        """Write the closed windows, each at its own step."""
        log_scalar_runs(trainer, self.clipper.take_closed())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self.clipper.settle()  # (the step is over: LBFGS has made all its calls)
        closed = self.clipper.closed
        if closed and closed[-1][0] == global_step(trainer) - 1 \
                and flush_due(closed[-1][0], closed[0][0]):  # (on the step that closed one)
            self.flush(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self.flush(trainer)

    # -- FastStep's member side (fast_step.py) -------------------------------------------------
    def fast_ready(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """The clipping itself runs from the module's hook, on every step, FastStep or not."""
        return True

    def next_own_step(self, trainer: L.Trainer, step: int) -> int:
        """The next step where closed windows may be written (a flush step, see
        fast_step.FLUSH_SPAN); without logging, every FLUSH_SPAN-th step (so that FastStep's
        kept rows, which this member does not need, are handed over and dropped)."""
        every = self.clipper.log_every
        if not every:
            return next_multiple(step, FLUSH_SPAN)
        closed = self.clipper.closed
        return next_flush_step(step, every, closed[0][0] if closed else None)

    def reads_grad_stats(self) -> bool:
        """The clipper reads the step's gradient statistics (`grad_stats`), which FastStep then
        shares instead of leaving it a second norm pass."""
        return self.clipper.active

    def absorb(self, trainer: L.Trainer, pl_module: L.LightningModule,
               names: tuple[str, ...], rows: list[Row]) -> None:
        """Nothing to take over: the clipper keeps its own on-device window."""
