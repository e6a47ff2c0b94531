"""Step-time overhead of the gradient callbacks (grad_monitor + grad_health + grad_clip).

For each model, in ONE process and interleaved (A B C, C B A, ...): A = the run without the three
callbacks; B = the same run with all three on at log_every_n_steps=1 (every step logs the total
and per-layer gradient norms; weight norms and update ratios every 10 steps, their default;
grad_health judges every step and, with its default on_non_finite=skip, reads one flag per
step); C = B with the update ratio (and weight norms) every step too. All log train/loss to
TensorBoard every step. A step's time is measured from one on_train_batch_start to the next,
so it includes forward, backward, optimizer and every callback hook; the first `warmup` steps
are dropped.
Reported: median over reps of the mean step time and of its ratio to A in the same rep, for
wall-clock time and for process CPU time (all threads; less sensitive to other processes on a
shared machine), the ratio of the fastest reps (the runs least slowed by other load), and the
CPU time (thread time) spent inside the callbacks' per-step hooks, the steadiest of them on a
busy machine.

    python scripts/bench_grad_overhead.py                 # both models, ~2-3 minutes on 2 cores
    python scripts/bench_grad_overhead.py --reps 9 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from hydra import compose, initialize_config_module

from losslab.builders import instantiate_group
from losslab.run import build_task, build_trainer

ROOT = Path(__file__).resolve().parents[1]
GRAD_CALLBACKS = ("grad_monitor", "grad_health", "grad_clip")
VARIANTS = {
    "without grad callbacks": [f"callbacks.{k}=null" for k in GRAD_CALLBACKS],
    "all three (defaults)": [],
    "all three, update ratio every step": ["callbacks.grad_monitor.update_ratio_every_n_steps=1"],
}
MODELS = {
    "mnist1d MLP 3x256 gelu (default run), batch 100": ([], 36, 4),
    "MLP 20x512 gelu, batch 256": (["model.hidden=null", "model.depth=20", "model.width=512",
                                    "data.batch_size=256"], 12, 2),
}


class StepTimer(L.Callback):
    """Wall-clock and process CPU time at every on_train_batch_start; starts `clock` after
    `warmup` batches and stops it after `warmup + steps`."""

    def __init__(self, clock: HookClock, warmup: int) -> None:
        self.times: list[tuple[float, float]] = []
        self.clock, self.warmup = clock, warmup

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.clock.active = len(self.times) >= self.warmup
        self.times.append((time.perf_counter(), time.process_time()))


HOOKS = ("on_before_backward", "on_before_optimizer_step", "on_train_batch_end")


class HookClock:
    """CPU time of the calling thread spent inside the gradient callbacks' per-step hooks
    (insensitive to other processes; excludes TensorBoard's writer thread)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.active = False

    def wrap(self, callback: Any) -> None:
        for name in HOOKS:
            fn = getattr(callback, name)

            def timed(*args: Any, _fn: Any = fn, **kwargs: Any) -> Any:
                t = time.thread_time()
                try:
                    return _fn(*args, **kwargs)
                finally:
                    if self.active:
                        self.total += time.thread_time() - t

            setattr(callback, name, timed)


def one_run(overrides: list[str], extra: list[str], steps: int, warmup: int,
            out: Path) -> tuple[float, float, float]:
    """Mean (wall, CPU, gradient-hook CPU) seconds per training step (after `warmup` steps)
    of one short fit."""
    with initialize_config_module("losslab.conf", version_base="1.3"):
        cfg = compose("train", overrides=[
            f"paths.output_dir={out}", f"paths.data_dir={ROOT / 'data'}",
            "callbacks.rich_progress_bar=null", "callbacks.rich_model_summary=null",
            "callbacks.model_checkpoint=null", "trainer.max_epochs=1",
            f"+trainer.limit_train_batches={warmup + steps + 1}", "+trainer.limit_val_batches=0",
            "trainer.log_every_n_steps=1", "+trainer.enable_progress_bar=false",
            "+trainer.enable_model_summary=false", *overrides, *extra])
    L.seed_everything(int(cfg.seed), verbose=False)
    task, dm = build_task(cfg)
    clock = HookClock()
    timer = StepTimer(clock, warmup)
    callbacks = [*instantiate_group(cfg.get("callbacks"), "callback"), timer]
    for cb in callbacks:
        if type(cb).__module__.startswith("losslab.callbacks.grad_") \
                or type(cb).__module__ == "losslab.callbacks.clipping":
            clock.wrap(cb)
    trainer = build_trainer(cfg, callbacks, instantiate_group(cfg.get("logger"), "logger"))
    trainer.fit(task, datamodule=dm)
    t = timer.times[warmup:warmup + steps + 1]
    n = len(t) - 1
    return (t[-1][0] - t[0][0]) / n, (t[-1][1] - t[0][1]) / n, clock.total / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="A/B pairs per model")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--only", choices=["default", "deep"], default=None)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    structured: dict[str, dict[str, dict[str, float]]] = {}
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("losslab").setLevel(logging.ERROR)  # the deep default-init MLP vanishes
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, reps={args.reps}")
    results: dict[str, list[str]] = {}
    models = list(MODELS.items())
    if args.only:
        models = models[:1] if args.only == "default" else models[1:]
    names = list(VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (overrides, steps, warmup) in models:
            runs: dict[str, list[tuple[float, float, float]]] = {v: [] for v in names}
            one_run(overrides, [], 2, 1, Path(tmp) / "warm")  # imports, caches
            for rep in range(args.reps):
                order = names if rep % 2 == 0 else names[::-1]
                for variant in order:
                    runs[variant].append(one_run(overrides, VARIANTS[variant], steps, warmup,
                                                 Path(tmp) / f"r{rep}"))
            print(f"\n{name}: {steps} steps x {args.reps} reps, ms/step (wall | CPU)")
            base = [statistics.median(r[k] for r in runs[names[0]]) for k in (0, 1)]
            for variant in names:
                wall, cpu = (statistics.median(r[k] for r in runs[variant]) for k in (0, 1))
                hooks = statistics.median(r[2] for r in runs[variant])
                # ratio to the baseline run of the same rep (adjacent in time), median over reps
                ratio = [statistics.median(r[k] / a[k] for r, a in
                                           zip(runs[variant], runs[names[0]], strict=True))
                         for k in (0, 1)]
                # the fastest rep of each variant: least touched by other load on the machine
                min_ratio = min(r[0] for r in runs[variant]) / min(r[0] for r in runs[names[0]])
                structured.setdefault(name, {})[variant] = {
                    "ms_per_step": 1e3 * wall, "cpu_ms_per_step": 1e3 * cpu,
                    "ratio": ratio[0], "cpu_ratio": ratio[1], "min_ratio": min_ratio,
                    "hooks_cpu_fraction": hooks / base[1]}
                line = (f"  {variant:36s} {1e3 * wall:8.2f} | {1e3 * cpu:8.2f}   ratio "
                        f"{ratio[0]:.3f} | {ratio[1]:.3f} (fastest reps {min_ratio:.3f})")
                if variant != names[0]:
                    line += f"   hooks {1e6 * hooks:.0f} us/step ({100 * hooks / base[1]:.1f}%)"
                    results.setdefault(variant, []).append(
                        f"{name.split(',')[0]}: {ratio[0]:.3f}x wall, {ratio[1]:.3f}x CPU, "
                        f"{min_ratio:.3f}x fastest reps, hooks {100 * hooks / base[1]:.1f}%")
                print(line)
                print("      wall per rep: "
                      + ", ".join(f"{1e3 * r[0]:.1f}" for r in runs[variant]))
    if args.json:
        import json

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(structured, indent=2))
    print("\nsummary (ratio to the run without the gradient callbacks):")
    for variant, lines in results.items():
        print(f"  {variant}: " + "; ".join(lines))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
