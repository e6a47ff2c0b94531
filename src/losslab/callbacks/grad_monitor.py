"""GradMonitor: gradient norms, update ratios, histograms and a layer x step heatmap.

Every `log_every_n_steps` (default: the trainer's) optimizer steps it logs, from `grad_stats`
(gradients after AMP unscaling/DDP all-reduce, before clipping):

* ``grad/norm_total``               ||g||_2 over all parameters
* ``grad/norm/<layer>``             ||g_layer||_2; layer = owning module (model.blocks.0.linear)

and every `update_ratio_every_n_steps` (default 10, the trainer's default logging interval
here; null: the logging interval) steps:

* ``weight/norm/<layer>``           ||w_layer||_2 (after the step)
* ``grad/update_ratio/<layer>``     ||w_after - w_before|| / ||w_after||, the relative size of
  the step the optimizer actually took (a rule of thumb for Adam/SGD: around 1e-3; far below
  means the layer barely learns, far above means it is being overwritten).

The update ratio needs a copy of the weights before the step, a subtraction and a norm after
it: three passes over the parameters, several times the cost of the gradient norms (one pass,
shared with GradHealth and GradClip). Weight norms come out of the same pass. They change
slowly, hence their own, sparser interval, which keeps per-step logging cheap.

plus, with a TensorBoard logger: histograms of each layer's gradients and weights every
`histogram_every_n_steps` (`histogram_bins` equal-width buckets, computed on the device; a layer
with NaN/Inf values is left out of that step's histograms), a custom-scalars layout that
groups the per-layer charts (the "Custom Scalars" tab), an image ``grad/norm_heatmap``
(log10 ||g_layer||, layers x logged steps in bins of 2^k steps, a palette PNG painted in numpy
and written with zlib, ~0.08 ms warm; see heatmap.py) at the end of every
`heatmap_every_n_epochs`-th epoch (default: each), and at the end of training the same map as
a labelled matplotlib figure ``grad/norm_heatmap_labelled`` (layer names, steps, colour bar).

Values are buffered and written at the steps s with (s + 1) % 10 == 0 (GradHealth's check
steps at its default interval, so the two share those steps; see fast_step.py), whenever the
buffered steps span 10 steps, and at each epoch end: one TensorBoard event per step, at its own
step number; on an accelerator they stay on the device until then (one host transfer for all
of them), on CPU they are read as floats at once (`GradStats.host_row`, free there). So at
`log_every_n_steps=1` the charts lag by up to 10 steps, and a step costs only the shared
`grad_stats`. Only global rank zero logs.
"""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from losslab.callbacks.fast_step import NEVER, Row, flush_due, next_flush_step, next_multiple
from losslab.callbacks.grad_stats import (
    GradStats,
    UpdateTracker,
    get_layout,
    grad_stats,
    reset_layout,
    weight_norms,
)
from losslab.callbacks.heatmap import NormHeatmap, fast_image, fast_png, labelled_image
from losslab.callbacks.tensorboard import (  # noqa: F401 (log_scalars: re-exported)
    log_histogram,
    log_image,
    log_png,
    log_scalar_rows,
    log_scalar_runs,
    log_scalars,
    tensorboard_writers,
    use_fast_tensorboard_crc,
)
from losslab.callbacks.trainer_reads import forget, global_step, is_global_zero
from losslab.errors import check_range


def custom_scalars_layout(layer_names: tuple[str, ...]) -> dict[str, dict[str, list[Any]]]:
    """TensorBoard custom-scalars layout: overview charts, then one chart per layer."""
    overview = {
        "total gradient norm (before/after clipping)": ["Multiline", [r"grad/norm_total.*"]],
        "gradient norm per layer": ["Multiline", [r"grad/norm/.*"]],
        "update / weight ratio per layer": ["Multiline", [r"grad/update_ratio/.*"]],
        "weight norm per layer": ["Multiline", [r"weight/norm/.*"]],
        "clipping: fraction of steps clipped": ["Multiline", [r"grad/clip_fraction"]],
        "health: events and skipped steps": ["Multiline", [r"health/.*"]],
    }
    per_layer = {
        name: ["Multiline", [rf"grad/norm/{re.escape(name)}$",
                             rf"grad/update_ratio/{re.escape(name)}$"]]
        for name in layer_names
    }
    return {"gradients": overview, "gradients by layer (norm, update ratio)": per_layer}


class GradMonitor(Callback):
    """Logs gradient statistics; see the module docstring for the metrics and charts."""

    groupable = True  # dispatched with the other gradient callbacks (callbacks/group.py)

    def __init__(self, log_every_n_steps: int | None = None, per_layer: bool = True,
                 update_ratio: bool = True, histogram_every_n_steps: int | None = 200,
                 heatmap_every_n_epochs: int | None = None, heatmap_max_columns: int = 400,
                 custom_layout: bool = True, fast_crc: bool = True,
                 update_ratio_every_n_steps: int | None = 10, histogram_bins: int = 64) -> None:
        owner = "callbacks.grad_monitor"
        check_range(owner, "log_every_n_steps", log_every_n_steps, low=1, allow_none=True)
        check_range(owner, "histogram_every_n_steps", histogram_every_n_steps, low=0,
                    allow_none=True)
        check_range(owner, "heatmap_every_n_epochs", heatmap_every_n_epochs, low=0,
                    allow_none=True)
        check_range(owner, "heatmap_max_columns", heatmap_max_columns, low=2)
        check_range(owner, "histogram_bins", histogram_bins, low=1)
        check_range(owner, "update_ratio_every_n_steps", update_ratio_every_n_steps, low=1,
                    allow_none=True)
        self.log_every_n_steps = log_every_n_steps
        self.per_layer, self.update_ratio = per_layer, update_ratio
        self.histogram_every_n_steps = histogram_every_n_steps or 0
        self.histogram_bins = int(histogram_bins)
        self.heatmap_every_n_epochs = heatmap_every_n_epochs
        self.heatmap_max_columns = int(heatmap_max_columns)
        self.custom_layout, self.fast_crc = custom_layout, fast_crc
        self.update_ratio_every_n_steps = update_ratio_every_n_steps
        self.tracker = UpdateTracker()
        self._tag_cache: dict[tuple[tuple[str, ...], bool, bool], tuple[str, ...]] = {}
        self._pending: tuple[int, GradStats, bool, bool] | None = None
        # (step, layer names, logged norms?, measured ratios?, parts: host floats or tensors)
        self._buffer: list[tuple[int, tuple[str, ...], bool, bool, list[Any]]] = []
        self.norm_map: NormHeatmap | None = None  # the heatmap's binned history
        self._worker: ThreadPoolExecutor | None = None  # histograms (CPU)
        self._images: list[Future] = []

    state_key = "GradMonitor"  # a constant (Lightning reads it on every hook call)

    def _every(self, trainer: L.Trainer) -> int:
        return int(self.log_every_n_steps or trainer.log_every_n_steps or 0)

    # -- hooks ---------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reset_layout(pl_module)
        forget(trainer)
        self._pending, self._buffer = None, []
        self.norm_map = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.fast_crc and tensorboard_writers(trainer):
            use_fast_tensorboard_crc()
        if not (self.custom_layout and trainer.is_global_zero):
            return
        names = get_layout(pl_module).layer_names if self.per_layer else ()
        for writer in tensorboard_writers(trainer):
            writer.add_custom_scalars(custom_scalars_layout(names))

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Any) -> None:
        if not is_global_zero(trainer):
            return
        step, every = global_step(trainer), self._every(trainer)
        log_now = bool(every) and (step + 1) % every == 0
        ratio_every = self.update_ratio_every_n_steps or every
        ratio_now = self.per_layer and self.update_ratio and bool(ratio_every) \
            and (step + 1) % ratio_every == 0
        hist_now = bool(self.histogram_every_n_steps) \
            and (step + 1) % self.histogram_every_n_steps == 0
        if not (log_now or ratio_now or hist_now):
            return
        stats = grad_stats(pl_module)
        if stats is None:
            return
        if hist_now:
            self._histograms(trainer, stats, step)
        if log_now or ratio_now:
            self._pending = (step, stats, log_now, ratio_now)
            if ratio_now:
                self.tracker.before(stats)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._pending is None or global_step(trainer) <= self._pending[0]:
            return  # no optimizer step finished since the logging step began (accumulation)
        step, stats, log_now, ratio_now = self._pending
        self._pending = None
        names = stats.layer_names if self.per_layer else ()
        parts: list[Any] = []
        if log_now:
            on_cpu = stats.on_cpu  # CPU: floats, no kernels (see host_row)
            if self.per_layer:
                parts.append(stats.host_row() if on_cpu else stats.packed)
                if not self.update_ratio:
                    parts.append(weight_norms(stats))
            else:
                parts.append(stats.host_row()[:1] if on_cpu else stats.total_norm.reshape(1))
        measured = self.tracker.after() if ratio_now else None
        if measured is not None:  # lists of floats (CPU) or device tensors
            parts += list(measured)
        if not parts:
            return
        self._buffer.append((step, names, log_now, measured is not None, parts))
        if flush_due(step, self._buffer[0][0]):
            self.flush(trainer)

    def flush(self, trainer: L.Trainer) -> None:
        """Write the buffered steps' values: one host transfer for all of them, then one
        TensorBoard event per step (at its own step number)."""
        if not self._buffer:
            return
        buffered, self._buffer = self._buffer, []
        tensors = [p for b in buffered for p in b[4] if isinstance(p, torch.Tensor)]
        flat = torch.cat(tensors).tolist() if tensors else []  # the one host transfer
        start = 0
        runs: list[tuple[tuple[str, ...], list[tuple[int, list[float]]]]] = []  # in step order
        for step, names, log_now, measured, parts in buffered:
            values: list[float] = []
            for part in parts:  # host floats (CPU) or device tensors, in order
                if isinstance(part, list):
                    values += part
                else:
                    values += flat[start:start + part.numel()]
                    start += part.numel()
            tags = self._tags(names, log_now, measured)
            if not runs or runs[-1][0] != tags:  # consecutive steps with the same tags share
                runs.append((tags, []))          # one writer lookup
            runs[-1][1].append((step, values))
            if log_now and self.per_layer:
                self._remember(step, names, values[1:1 + len(names)])
        log_scalar_runs(trainer, runs)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.flush(trainer)
        if not self.norm_map:
            return
        every = 1 if self.heatmap_every_n_epochs is None else self.heatmap_every_n_epochs
        if every and (trainer.current_epoch + 1) % every == 0:
            self.log_heatmap(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        if trainer.is_global_zero:  # the last steps before a failure are the interesting ones
            self.flush(trainer)
            self.wait_for_images(raise_errors=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.flush(trainer)
            self.wait_for_images()
        if trainer.is_global_zero and self.norm_map and self.heatmap_every_n_epochs != 0:
            self.log_heatmap(trainer, labelled=True)

    # -- FastStep's member side (fast_step.py) -------------------------------------------------
    def fast_ready(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """Every logging step's values are in FastStep's row, except weight norms logged at
        every logging step (per_layer with update_ratio off), which need the weights."""
        return not (self.per_layer and not self.update_ratio)

    def next_own_step(self, trainer: L.Trainer, step: int) -> int:
        """The next step after `step` with a flush (see fast_step.FLUSH_SPAN), an update ratio or
        histograms: the steps whose hooks must run."""
        if not is_global_zero(trainer):
            return NEVER
        every, own = self._every(trainer), []
        if every:
            own.append(next_flush_step(step, every, self._buffer[0][0] if self._buffer else None))
        ratio_every = self.update_ratio_every_n_steps or every
        if self.per_layer and self.update_ratio and ratio_every:
            own.append(next_multiple(step, ratio_every))
        if self.histogram_every_n_steps:
            own.append(next_multiple(step, self.histogram_every_n_steps))
        return min(own, default=NEVER)

    def absorb(self, trainer: L.Trainer, pl_module: L.LightningModule,
               names: tuple[str, ...], rows: list[Row]) -> None:
        """Buffer FastStep's rows of logging steps, as `on_train_batch_end` would have."""
        every = self._every(trainer)
        if not (every and is_global_zero(trainer)):
            return
        if self.per_layer:
            self._buffer += [(s, names, True, False, [row]) for s, row, _ in rows
                             if (s + 1) % every == 0]
        else:
            self._buffer += [(s, (), True, False, [row[:1]]) for s, row, _ in rows
                             if (s + 1) % every == 0]

    # -- pieces --------------------------------------------------------------------------------
    def _tags(self, names: tuple[str, ...], log_now: bool, measured: bool) -> tuple[str, ...]:
        """Metric names in the order of the values in `on_train_batch_end` (cached)."""
        key = (names, log_now, measured)
        if key not in self._tag_cache:
            tags = []
            if log_now:
                tags += ["grad/norm_total", *(f"grad/norm/{k}" for k in names)]
                if names and not self.update_ratio:
                    tags += [f"weight/norm/{k}" for k in names]
            if measured:
                tags += [f"weight/norm/{k}" for k in names]
                tags += [f"grad/update_ratio/{k}" for k in names]
            self._tag_cache[key] = tuple(tags)
        return self._tag_cache[key]

    def _remember(self, step: int, names: tuple[str, ...], norms: list[float]) -> None:
        if self.norm_map is None or names != self.norm_map.names:  # new layer set: new map
            self.norm_map = NormHeatmap(names, self.heatmap_max_columns)
        self.norm_map.add(step, norms)

    def _histograms(self, trainer: L.Trainer, stats: GradStats, step: int) -> None:
        writers = tensorboard_writers(trainer)
        if not writers:
            return
        by_layer: dict[int, list[int]] = {}
        for k, layer in enumerate(stats.param_layer_ids):
            by_layer.setdefault(layer, []).append(k)
        values: list[tuple[str, torch.Tensor]] = []
        with torch.no_grad():  # copies (torch.cat) of this step's gradients and weights
            for layer, ks in by_layer.items():
                name = stats.layer_names[layer]
                values.append((f"grad_hist/{name}", torch.cat(
                    [stats.params[k].grad.detach().flatten() for k in ks])))  # type: ignore
                values.append((f"weight_hist/{name}", torch.cat(
                    [stats.params[k].detach().flatten() for k in ks])))
        if values[0][1].is_cpu:  # CPU: binned and written by the worker thread (ops free the GIL)
            self._submit(self._write_histograms, writers, values, step)
        else:  # on the device, where only the counts move to the host
            self._write_histograms(writers, values, step)

    def _write_histograms(self, writers: list[Any], values: list[tuple[str, torch.Tensor]],
                          step: int) -> None:
        with torch.no_grad():
            for tag, v in values:
                for writer in writers:
                    log_histogram(writer, tag, v, step, self.histogram_bins)

    def _submit(self, fn: Any, *args: Any) -> None:
        """Run fn(*args) on the monitor's worker thread (TensorBoard writers are thread-safe);
        `wait_for_images` waits for all of them."""
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="losslab-monitor")
        self._images.append(self._worker.submit(fn, *args))

    def heatmap(self) -> tuple[np.ndarray, list[int]]:
        """log10 ||g_layer|| as [layers, bins] (bins of 2^k logged steps, at most
        `heatmap_max_columns`) and each bin's first step; see losslab/callbacks/heatmap.py."""
        if self.norm_map is None:
            return np.empty((0, 0)), []
        return self.norm_map.grid()

    def render_heatmap(self) -> np.ndarray:
        """The heatmap as a labelled matplotlib figure, RGB [H, W, 3]."""
        data, steps = self.heatmap()
        return labelled_image(data, steps, self.norm_map.names if self.norm_map else ())

    def fast_heatmap(self, cell_height: int = 8, width: int = 800) -> np.ndarray:
        """The heatmap as an RGB array painted in numpy (~0.2 ms)."""
        return fast_image(self.heatmap()[0], cell_height, width)

    def log_heatmap(self, trainer: L.Trainer, labelled: bool = False) -> None:
        """`grad/norm_heatmap` (every epoch: a palette PNG, ~0.08 ms warm) or, with
        `labelled`, the matplotlib figure as `grad/norm_heatmap_labelled` (end of fit)."""
        writers = tensorboard_writers(trainer)
        if not writers or not self.norm_map:
            return
        step = trainer.global_step
        if labelled:
            self.wait_for_images()
            image = self.render_heatmap()
            for writer in writers:
                log_image(writer, "grad/norm_heatmap_labelled", image, step)
            return
        png, height, width = fast_png(self.heatmap()[0])  # ~0.08 ms: here, not on the worker
        for writer in writers:                            # (whose GIL hand-offs cost more)
            log_png(writer, "grad/norm_heatmap", png, height, width, step)

    def wait_for_images(self, raise_errors: bool = True) -> None:
        """Block until the histograms handed to the worker thread are written
        (re-raising a failure in one, unless `raise_errors` is False: training already failed)."""
        images, self._images = self._images, []
        for future in images:
            error = future.exception()
            if error is not None and raise_errors:
                raise error

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.wait_for_images()
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None
