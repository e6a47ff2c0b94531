"""Step-time overhead of the gradient callbacks (grad_monitor + grad_health + grad_clip).

The two variants are interleaved IN BLOCKS OF STEPS INSIDE ONE FIT, so the drift of a shared
machine (its speed changes by 20-40% over seconds here) hits both alike:

    A = the run without the three callbacks          B = the same run with all three on

at log_every_n_steps=1 (every step logs the total and per-layer gradient norms; weight norms
and update ratios every 10 steps, their default; grad_health judges every step and, with its
default on_non_finite=skip, reads one flag per step; histograms every 200 steps). A controller
callback swaps the trainer's callback list at the first step of each block of `--block` steps
(default 10: each B block holds exactly one of each 10-step event, the update ratio, the health
check, the monitor's flush; pattern A B B A A B B A ...) and attaches or detaches the step
guard GradHealth puts on the module, so an A block runs exactly the code of a run without the
callbacks. A block is timed from the start of its first step to the start of the next block,
so it includes its steps' hooks and any epoch-end work that falls in it (the monitor's flush
and heatmap, when B is on then); validation and checkpointing are off. `--block 0`
interleaves whole epochs.

The timed epochs are split over `--processes` fits, each in a fresh process (default 8 for
the default MLP, 3 for the deep one), and their block pairs pooled: one process samples one
memory layout, and on this project's CPU that alone moves one fit's ratio by +-2-3%
(consecutive single-fit runs gave 1.02 to 1.07 for the default MLP, and one pooled run's fits
1.012, 1.062 and 1.034; the cost of the hooks' cache misses depends on where things land),
more than the interval within the fit. Pooling fits averages over layouts; the default MLP's
fits are short (its epochs take a fifth of a second), so it pools eight (five until the
2026-12-03 night, when single fits of 0.96x-1.14x were seen in one pooled run).

Reported per model: the median over adjacent (A, B) block pairs of time(B) / time(A), for
wall-clock and process CPU time; the ratio of the summed times (which counts rare costs such as
the histograms and the epoch-end work fully); a bootstrap 90% interval of the median; each
process's own median; and the CPU time spent inside the callbacks' hooks (measured in 4 more
B epochs at the end of each fit, so the timing wrappers do not slow the compared ones) as a
share of an A step's CPU time.

    python scripts/bench_grad_overhead.py                  # both models, ~2-3 minutes
    python scripts/bench_grad_overhead.py --epochs 40 --threads 1 --only default
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from hydra import compose, initialize_config_module

from losslab.builders import instantiate_group
from losslab.callbacks.group import group_callbacks, iter_callbacks
from losslab.run import build_task, build_trainer

ROOT = Path(__file__).resolve().parents[1]
GRAD_CALLBACKS = ("grad_monitor", "grad_health", "grad_clip")
PATTERN = "ABBA"  # A B B A: a linear drift within each group of four cancels
MODELS = {  # name: (overrides, default timed epochs, timed epochs per --reps, fits)
    "mnist1d MLP 3x256 gelu (default run), batch 100": ([], 48, 8, 8),
    "MLP 20x512 gelu, batch 256": (["model.hidden=null", "model.depth=20", "model.width=512",
                                    "data.batch_size=256"], 16, 5, 3),
}
HOOKS = ("on_before_backward", "on_before_optimizer_step", "on_train_batch_end",
         "on_train_epoch_end")


class HookClock:
    """Thread CPU time spent inside the wrapped callbacks' hooks (excludes TensorBoard's
    writer thread)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.installed = False

    def wrap(self, callback: Any) -> None:
        self.installed = True
        for name in HOOKS:
            fn = getattr(callback, name)
            if fn is None:  # a hook the group does not dispatch
                continue

            def timed(*args: Any, _fn: Any = fn, **kwargs: Any) -> Any:
                t = time.thread_time()
                try:
                    return _fn(*args, **kwargs)
                finally:
                    self.total += time.thread_time() - t

            setattr(callback, name, timed)


class Switch(L.Callback):
    """First in the callback list: installs the callback list of each block's variant and
    records (variant, wall, CPU, hook CPU, steps) of every block.

    A block is `block` consecutive training steps (0: one epoch), timed from the start of its
    first step to the start of the step after its last, so it includes its steps' hooks (and,
    for a block that spans an epoch's end, that epoch-end work, whichever variant runs then).
    Warm-up epochs run B untimed; then the blocks follow PATTERN; then H epochs: B with the
    hook clock (whose wrappers would slow the compared blocks down)."""

    def __init__(self, base: list[L.Callback], grad: list[L.Callback], clock: HookClock,
                 warmup_epochs: int, timed_epochs: int, block: int) -> None:
        self.base, self.grad, self.clock = base, grad, clock
        self.warmup, self.timed, self.block = warmup_epochs, timed_epochs, block
        self.blocks: list[tuple[str, float, float, float, int]] = []
        self._open: tuple[str, float, float, float] | None = None
        self._steps = 0  # steps of the open block
        self._timed_steps = 0
        self._opened = 0
        self._variant = "B"

    def _install(self, trainer: L.Trainer, pl_module: L.LightningModule, variant: str) -> None:
        self._variant = variant
        members = list(iter_callbacks(self.grad))
        if variant == "H" and not self.clock.installed:
            for cb in self.grad:  # the group as Lightning calls it (with FastStep inside)
                self.clock.wrap(cb)
        on = variant in ("B", "H")
        # a new list object: Lightning is iterating the old one right now
        trainer.callbacks = [*self.base, *(self.grad if on else [])]
        guard = next((cb.guard for cb in members if hasattr(cb, "guard")), None)
        if guard is not None and on:
            object.__setattr__(pl_module, "step_guard", guard)
        elif getattr(pl_module, "step_guard", None) is not None:
            object.__delattr__(pl_module, "step_guard")

    def _close(self) -> None:
        now = (time.perf_counter(), time.process_time(), self.clock.total)
        if self._open is not None:
            v, w0, c0, h0 = self._open
            self.blocks.append((v, now[0] - w0, now[1] - c0, now[2] - h0, self._steps))
        self._open, self._steps = None, 0

    def _begin(self, variant: str) -> None:
        self._open = (variant, time.perf_counter(), time.process_time(), self.clock.total)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        epoch = trainer.current_epoch
        if epoch < self.warmup:
            return  # B (installed by the trainer's callback list), untimed
        if epoch >= self.warmup + self.timed:
            if self._variant != "H":
                self._close()
                self._install(trainer, pl_module, "H")
                self._begin("H")
            self._steps += 1
            return
        starts = batch_idx == 0 if self.block == 0 else self._timed_steps % self.block == 0
        if starts:
            self._close()
            variant = PATTERN[self._opened % len(PATTERN)]
            self._opened += 1
            if variant != self._variant:
                self._install(trainer, pl_module, variant)
            self._begin(variant)
        self._timed_steps += 1
        self._steps += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()  # the last block (runs before the other callbacks' on_train_end)
        trainer.callbacks = [*self.base, *self.grad]  # teardown for everyone


def one_fit(overrides: list[str], epochs: int, warmup: int, out: Path, extra: list[str],
            block: int, hook_epochs: int = 4) -> list[Block]:
    with initialize_config_module("losslab.conf", version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.output_dir={out}", f"paths.data_dir={ROOT / 'data'}",
            "callbacks.rich_progress_bar=null", "callbacks.rich_model_summary=null",
            # no checkpoints: Lightning's default one would write the model and optimizer state
            # at every epoch end, in whichever block that falls (a 63 MB file for the deep MLP,
            # a tenth of its block): the same work in A and B, only noise in the pair ratios
            "callbacks.model_checkpoint=null", "+trainer.enable_checkpointing=false",
            f"trainer.max_epochs={epochs + warmup + hook_epochs}",
            "+trainer.limit_val_batches=0", "trainer.log_every_n_steps=1",
            "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
            *overrides, *extra])
    L.seed_everything(int(cfg.seed), verbose=False)
    task, dm = build_task(cfg)
    clock = HookClock()
    callbacks = instantiate_group(cfg.get("callbacks"), "callback")
    switch = Switch([], [], clock, warmup, epochs, block)
    trainer = build_trainer(cfg, [switch, *callbacks],
                            instantiate_group(cfg.get("logger"), "logger"))
    # the gradient callbacks, grouped as a run groups them (without the LR monitor, which a run
    # groups with them and which both variants keep)
    names = ("GradMonitor", "GradHealth", "GradClip")
    flat = list(iter_callbacks(trainer.callbacks))  # + Lightning's own
    grad = [cb for cb in flat if type(cb).__name__ in names]
    assert grad, "no gradient callback to measure"
    switch.grad = group_callbacks(grad)
    switch.base = [cb for cb in flat if cb not in grad]
    trainer.callbacks = [*switch.base, *switch.grad]
    trainer.fit(task, datamodule=dm)
    return switch.blocks


Block = tuple[str, float, float, float, int]  # variant, wall s, CPU s, hook CPU s, steps


def block_pairs(blocks: list[Block]) -> list[tuple[Block, Block]]:
    """Each B block with the A block next to it (A B | B A | ...), of one fit."""
    blocks = [b for b in blocks if b[0] != "H"]
    pairs = [(blocks[i], blocks[i + 1]) for i in range(0, len(blocks) - 1, 2)]
    pairs = [(a, b) if a[0] == "A" else (b, a) for a, b in pairs]
    return [(a, b) for a, b in pairs if a[0] == "A" and b[0] == "B" and a[4] == b[4]]


def summarise(fits: list[list[Block]]) -> dict[str, Any]:
    """Ratios over the (A, B) pairs of all fits, pooled (see the module docstring)."""
    hooked = [b for blocks in fits for b in blocks if b[0] == "H"]
    per_fit = [block_pairs(blocks) for blocks in fits]
    pairs = [pair for fit in per_fit for pair in fit]
    wall = [b[1] / a[1] for a, b in pairs]
    cpu = [b[2] / a[2] for a, b in pairs]
    rng = random.Random(0)
    boot = sorted(statistics.median(rng.choices(wall, k=len(wall))) for _ in range(2000))
    a_wall = sum(a[1] for a, _ in pairs)
    a_cpu_per_step = statistics.median(a[2] / a[4] for a, _ in pairs)
    return {
        "pairs": len(pairs), "ratio": statistics.median(wall), "cpu_ratio": statistics.median(cpu),
        "ratio_of_sums": sum(b[1] for _, b in pairs) / a_wall,
        "ci90_low": boot[int(0.05 * len(boot))], "ci90_high": boot[int(0.95 * len(boot))],
        "hooks_cpu_fraction": sum(h[3] for h in hooked) / sum(h[4] for h in hooked)
        / a_cpu_per_step,
        "ms_per_step_a": 1e3 * statistics.median(a[1] / a[4] for a, _ in pairs),
        "ms_per_step_b": 1e3 * statistics.median(b[1] / b[4] for _, b in pairs),
        "steps_per_block": statistics.median(a[4] for a, _ in pairs),
        "per_process": [statistics.median(b[1] / a[1] for a, b in fit) for fit in per_fit
                        if fit],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs per model (default: 48 default MLP, 16 deep MLP)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed epochs first (B)")
    parser.add_argument("--reps", type=int, default=None,
                        help="(make bench) scales --epochs: reps x 8 epochs (default MLP) or "
                             "x 5 (deep MLP), at least 8")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--only", choices=["default", "deep"], default=None)
    parser.add_argument("--block", type=int, default=10,
                        help="steps per interleaved block (0: whole epochs)")
    parser.add_argument("--processes", type=int, default=None,
                        help="fits per model, each in a fresh process, pooled (1: in this one; "
                             "default 8 for the default MLP, whose short steps make a fit's "
                             "ratio depend on its process's memory layout, 3 for the deep one)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--blocks-to", type=Path, help=argparse.SUPPRESS)  # a child process
    parser.add_argument("overrides", nargs="*", help="extra overrides for both variants")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("losslab").setLevel(logging.ERROR)  # the deep default-init MLP vanishes
    warnings.filterwarnings("ignore")
    models = list(MODELS.items())
    if args.only:
        models = models[:1] if args.only == "default" else models[1:]
    if args.blocks_to:  # one fit of one model, its blocks to a file (see `fits_in_processes`)
        (_, (overrides, _, _, _)), = models
        hook_epochs = 4 if args.processes == 1 else 2
        with tempfile.TemporaryDirectory() as tmp:
            blocks = one_fit(overrides, args.epochs, args.warmup, Path(tmp) / "run",
                             args.overrides, args.block, hook_epochs)
        args.blocks_to.write_text(json.dumps(blocks))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"log_every_n_steps=1; blocks of {args.block or 'one epoch of'} steps interleaved "
          f"{PATTERN}... inside each fit; several fits per model (each in a fresh process), "
          "pooled")
    structured: dict[str, dict[str, dict[str, Any]]] = {}
    for name, (overrides, default_epochs, per_rep, default_fits) in models:
        processes = max(1, args.processes or default_fits)
        hook_epochs = 4 if processes == 1 else 2
        epochs = args.epochs or (max(8, per_rep * args.reps) if args.reps else default_epochs)
        each = -(-epochs // processes)
        each += each % 2
        t0 = time.time()
        if processes == 1:
            with tempfile.TemporaryDirectory() as tmp:
                fits = [one_fit(overrides, each, args.warmup, Path(tmp) / "run",
                                args.overrides, args.block, hook_epochs)]
        else:
            only = "default" if name == next(iter(MODELS)) else "deep"
            fits = fits_in_processes(only, each, processes, args)
        result = summarise(fits)
        structured[name] = {"all three (defaults)": result}
        print(f"\n{name}: {result['pairs']} (A, B) pairs of {result['steps_per_block']:.0f}-"
              f"step blocks from {len(fits)} fit(s), {time.time() - t0:.0f} s")
        print(f"  step: A {result['ms_per_step_a']:.2f} ms, B "
              f"{result['ms_per_step_b']:.2f} ms (medians)")
        print(f"  B / A: {result['ratio']:.3f}x wall (90% CI {result['ci90_low']:.3f}-"
              f"{result['ci90_high']:.3f}), {result['cpu_ratio']:.3f}x CPU, "
              f"{result['ratio_of_sums']:.3f}x summed wall; hooks "
              f"{100 * result['hooks_cpu_fraction']:.1f}% of the step's CPU")
        print("  each fit's median: " + ", ".join(f"{r:.3f}x" for r in result["per_process"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(structured, indent=2))
    sys.stdout.flush()


def fits_in_processes(only: str, epochs: int, processes: int,
                      args: argparse.Namespace) -> list[list[Block]]:
    """`processes` fits of one model, one after another, each in a fresh Python process."""
    fits = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(processes):
            path = Path(tmp) / f"blocks{k}.json"
            command = [sys.executable, __file__, "--only", only, "--epochs", str(epochs),
                       "--warmup", str(args.warmup), "--block", str(args.block),
                       "--processes", str(processes), "--blocks-to", str(path)]
            if args.threads:
                command += ["--threads", str(args.threads)]
            done = subprocess.run([*command, *args.overrides], capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"a benchmark fit failed:\n{done.stderr[-3000:]}")
            fits.append([tuple(b) for b in json.loads(path.read_text())])
    return fits


if __name__ == "__main__":
    main()
