"""Framework overhead: training steps/s of the default MNIST-1D MLP (batch 100, Adam, one-cycle)
trained by (a) a plain PyTorch loop (the limit), (b) plain Lightning with a standard
`DataLoader(TensorDataset)`, (c) losslab's full default stack (the Hydra-composed default run:
every default callback, gradient monitoring, TensorBoard logging).

All three train the same model (same initial weights), the same loss (mean cross-entropy), the
same optimizer and per-step schedule on the same standardised training split; validation is off
in all three, so this measures training throughput only.

Pairing (a shared machine's speed drifts by 20-40% within seconds here): (b) and (c) each run as
one fit, and at the end of each of their epochs a callback trains ONE EPOCH OF THE PLAIN LOOP
(its own model copy, optimizer and schedule, on the same data). So every Lightning epoch has an
(a) epoch right next to it in time; a Lightning epoch is timed from its start to the next one's,
minus the (a) epoch inside it (so it includes its epoch-end work: checkpoints, the monitor's
heatmap). Reported: median ms/step of each, and the median over epochs of the ratio to the (a)
epoch beside it. The first `--warmup-epochs` epochs are not timed.

Peak memory is measured in fresh processes (one per variant, `--memory`): peak RSS during
training, and the "framework allowance" = RSS just before the first step of (c) minus that of
(a) (imports and set-up of Lightning, Hydra, TensorBoard, torchmetrics).

    python scripts/bench_framework.py --threads 1 --reps 5
    python scripts/bench_framework.py --variant losslab -- callbacks.grad_monitor=null  # ablation
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from losslab.benchmarking import write_json

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("raw", "lightning", "losslab")
LABELS = {"raw": "(a) plain PyTorch loop", "lightning": "(b) plain Lightning + DataLoader",
          "losslab": "(c) losslab default stack"}


def quiet() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "losslab"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def compose_default(out: Path, extra: list[str], epochs: int, validate: bool = False) -> Any:
    """The default run's config (`python train.py`), without validation unless `validate`."""
    from hydra import compose, initialize_config_module

    no_val = [] if validate else ["+trainer.limit_val_batches=0"]
    with initialize_config_module("losslab.conf", version_base="1.3"):
        return compose("train", overrides=[
            f"paths.output_dir={out}", f"paths.data_dir={ROOT / 'data'}",
            f"trainer.max_epochs={epochs}", *no_val, *extra])


#: the GPU comparison: a CNN big enough to matter, bf16 autocast, bigger batches
GPU_OVERRIDES = ["experiment=mnist1d_cnn", "trainer=gpu", "trainer.precision=bf16-mixed",
                 "data.batch_size=512", "model.channels=[128,256,256]"]


def describe(cfg: Any) -> str:
    """'MNIST-1D MLP 256-256-256', 'MNIST-1D CNN 128-256-256', ...: the model the run trains."""
    m = cfg.model
    data = "MNIST-1D" if cfg.data.name == "mnist1d" else str(cfg.data.name)
    sizes = m.get("channels") if m.name.startswith("cnn") else m.get("hidden")
    kind = {"mlp": "MLP", "cnn1d": "CNN", "cnn2d": "2-D CNN"}.get(str(m.name), str(m.name))
    return f"{data} {kind}" + (f" {'-'.join(str(c) for c in sizes)}" if sizes else "")


class Setup:
    """The default run's data, initial model and recipe, shared by every variant."""

    def __init__(self, epochs: int, extra: list[str], device: str = "cpu",
                 bf16: bool = False) -> None:
        import lightning.pytorch as L

        from losslab.run import build_task

        self.epochs, self.device = epochs, device
        self.bf16 = bf16 or device == "cuda"
        if device == "cuda":
            self.extra = [*GPU_OVERRIDES, *extra]
        else:
            self.extra = [*(["trainer.precision=bf16-mixed"] if bf16 else []), *extra]
        #: the dtype of the model's output in each variant's first training step
        self.output_dtypes: dict[str, str] = {}
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose_default(Path(tmp), self.extra, epochs)
        L.seed_everything(int(cfg.seed), verbose=False)
        task, dm = build_task(cfg)
        dm.setup("fit")
        self.x, self.y = dm.splits["train"][0].to(device), dm.splits["train"][1].to(device)
        self.batch_size = int(cfg.data.batch_size)
        self.lr = float(cfg.optim.lr)
        self.sched = dict(cfg.scheduler)
        self.model0 = copy.deepcopy(task.model)
        self.description = describe(cfg) + (", bf16" if self.bf16 else "")
        self.steps_per_epoch = len(self.x) // self.batch_size + bool(len(self.x) % self.batch_size)

    def model(self, variant: str | None = None) -> Any:
        """A fresh copy of the initial model; with `variant`, its first output's dtype is
        recorded in `output_dtypes[variant]` (what autocast really ran)."""
        model = copy.deepcopy(self.model0).to(self.device)
        if variant is not None:
            record_output_dtype(model, self.output_dtypes, variant)
        return model

    def optimizer(self, params: Any) -> tuple[Any, Any]:
        import torch

        opt = torch.optim.Adam(params, lr=self.lr, fused=True)  # what losslab's adam uses
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=self.lr, total_steps=self.epochs * self.steps_per_epoch,
            pct_start=float(self.sched.get("pct_start", 0.3)))
        return opt, sched


def record_output_dtype(model: Any, into: dict[str, str], key: str) -> None:
    """Record the dtype of `model`'s first output in training mode as `into[key]`; the hook
    then removes itself (no per-step cost)."""

    def hook(module: Any, args: Any, output: Any) -> None:
        if module.training:
            into[key] = str(output.dtype).removeprefix("torch.")
            handle.remove()

    handle = model.register_forward_hook(hook)


def run_raw(s: Setup, warmup: int) -> tuple[tuple[float, float], int]:
    """((wall, CPU) seconds per step after `warmup` steps, number of steps)."""
    import torch
    import torch.nn.functional as F

    model = s.model()
    model.train()
    opt, sched = s.optimizer(model.parameters())
    n, bs, step, t0, c0 = len(s.x), s.batch_size, 0, 0.0, 0.0
    bf16 = getattr(s, "bf16", False)
    cuda = s.device == "cuda"
    for _ in range(s.epochs):
        perm = torch.randperm(n, device=s.device)
        for i in range(0, n, bs):
            if step == warmup:
                if cuda:
                    torch.cuda.synchronize()
                t0, c0 = time.perf_counter(), time.process_time()
            idx = perm[i:i + bs]
            with torch.autocast(s.device, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(s.x[idx]), s.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    if cuda:
        torch.cuda.synchronize()
    n = step - warmup
    return ((time.perf_counter() - t0) / n, (time.process_time() - c0) / n), step


class RawLoop:
    """The plain PyTorch loop, one epoch at a time (its own model copy, optimizer, schedule)."""

    def __init__(self, s: Setup) -> None:
        self.s = s
        self.model = s.model("raw")
        self.model.train()
        self.opt, self.sched = s.optimizer(self.model.parameters())

    def epoch(self) -> tuple[float, float, int]:
        """Train one epoch: (wall s, process CPU s, steps)."""
        import torch
        import torch.nn.functional as F

        s, cuda = self.s, self.s.device == "cuda"
        if cuda:
            torch.cuda.synchronize()
        t0, c0, steps = time.perf_counter(), time.process_time(), 0
        n, bs = len(s.x), s.batch_size
        perm = torch.randperm(n, device=s.device)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            with torch.autocast(s.device, dtype=torch.bfloat16, enabled=s.bf16):
                loss = F.cross_entropy(self.model(s.x[idx]), s.y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            steps += 1
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0, time.process_time() - c0, steps


class PairedEpochs:
    """A Lightning callback that trains one plain-loop epoch at the end of each epoch of the fit
    it is in, and records per epoch: (lightning wall, lightning CPU, raw wall, raw CPU, steps).
    A Lightning epoch runs from one on_train_epoch_start to the next, minus the raw epoch."""

    def __new__(cls, s: Setup, warmup_epochs: int) -> Any:
        import lightning.pytorch as L
        import torch

        class _Paired(L.Callback):
            def __init__(self) -> None:
                self.raw = RawLoop(s)
                self.epochs: list[tuple[float, float, float, float, int]] = []
                self._start: tuple[float, float] | None = None
                self._raw: tuple[float, float, int] = (0.0, 0.0, 0)
                self._batches = 0

            def _close(self, trainer: Any) -> None:
                if s.device == "cuda":
                    torch.cuda.synchronize()
                now = (time.perf_counter(), time.process_time())
                if self._start is not None and trainer.current_epoch - 1 >= warmup_epochs:
                    rw, rc, steps = self._raw
                    self.epochs.append((now[0] - self._start[0] - rw,
                                        now[1] - self._start[1] - rc, rw, rc, steps))
                self._start = now

            def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
                self._close(trainer)

            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                self._raw = self.raw.epoch()

            def on_train_end(self, trainer: Any, pl_module: Any) -> None:
                self._close(trainer)

            def per_step(self) -> tuple[float, float]:
                steps = sum(e[4] for e in self.epochs)
                return (sum(e[0] for e in self.epochs) / steps,
                        sum(e[1] for e in self.epochs) / steps)

        return _Paired()


class StepClock:
    """perf_counter at each on_train_batch_start and after the last batch (a Lightning callback):
    the timed span includes every epoch boundary but the last (the raw loop's too)."""

    def __new__(cls, warmup: int) -> Any:
        import lightning.pytorch as L

        class _Clock(L.Callback):
            def __init__(self) -> None:
                self.starts: list[tuple[float, float]] = []
                self.end = (0.0, 0.0)

            def on_train_batch_start(self, *args: Any) -> None:
                self.starts.append((time.perf_counter(), time.process_time()))

            def on_train_batch_end(self, *args: Any) -> None:  # the last: end of the last step
                self.end = (time.perf_counter(), time.process_time())

            def per_step(self) -> tuple[float, float]:
                n = len(self.starts) - warmup
                return ((self.end[0] - self.starts[warmup][0]) / n,
                        (self.end[1] - self.starts[warmup][1]) / n)

        return _Clock()


def run_lightning(s: Setup, warmup: int, out: Path,
                  clock: Any = None) -> tuple[tuple[float, float], int]:
    import lightning.pytorch as L
    import torch.nn.functional as F
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    class Plain(L.LightningModule):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            opt, sched = s.optimizer(self.parameters())
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # what most users write: the data on the host, pinned on CUDA, Lightning moves each batch
    loader = DataLoader(TensorDataset(s.x.cpu(), s.y.cpu()), batch_size=s.batch_size,
                        shuffle=True, pin_memory=s.device == "cuda")
    clock = clock or StepClock(warmup)
    trainer = L.Trainer(max_epochs=s.epochs, devices=1, callbacks=[clock],
                        accelerator="gpu" if s.device == "cuda" else "cpu",
                        precision="bf16-mixed" if s.bf16 else "32-true",
                        logger=TensorBoardLogger(str(out), name="plain"), default_root_dir=out,
                        log_every_n_steps=10, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(Plain(s.model("lightning")), train_dataloaders=loader)
    return clock.per_step(), len(getattr(clock, "starts", ()))


def run_losslab(s: Setup, warmup: int, out: Path,
                clock: Any = None) -> tuple[tuple[float, float], int]:
    """The default run as `python train.py` builds it (losslab.run's own builders)."""
    from losslab.builders import instantiate_group
    from losslab.run import build_task, build_trainer

    cfg = compose_default(out, s.extra, s.epochs)
    task, dm = build_task(cfg)
    task.model.load_state_dict(s.model0.state_dict())
    record_output_dtype(task.model, s.output_dtypes, "losslab")
    clock = clock or StepClock(warmup)
    callbacks = [*instantiate_group(cfg.get("callbacks"), "callback"), clock]
    trainer = build_trainer(cfg, callbacks, instantiate_group(cfg.get("logger"), "logger"))
    trainer.fit(task, datamodule=dm)
    return clock.per_step(), len(getattr(clock, "starts", ()))


def run_variant(variant: str, s: Setup, warmup: int, out: Path) -> tuple[float, float]:
    """(wall, process CPU) seconds per training step."""
    if variant == "raw":
        return run_raw(s, warmup)[0]
    if variant == "lightning":
        return run_lightning(s, warmup, out)[0]
    return run_losslab(s, warmup, out)[0]


def rss_mb() -> float:
    """Current resident set size (MB), from /proc (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class SavedSetup:
    """What `run_raw` needs, loaded from a file with torch only (no Lightning, Hydra, ...)."""

    def __init__(self, path: Path) -> None:
        import torch

        state = torch.load(path, weights_only=False)
        self.__dict__.update(state)
        self.device = "cpu"

    def model(self) -> Any:
        return copy.deepcopy(self.model0)

    optimizer = Setup.optimizer


def memory_child(variant: str, epochs: int, setup_file: Path) -> None:
    """One variant in this (fresh) process; prints JSON {before, peak} in MB. The raw loop
    imports only torch (and the model's class); losslab builds its whole stack."""
    import torch

    torch.set_num_threads(1)
    s: Any = SavedSetup(setup_file) if variant == "raw" else None
    if s is None:
        quiet()
        s = Setup(epochs, [])
    before = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        if variant == "raw":
            run_raw(s, 1)
        else:
            run_variant(variant, s, 1, Path(tmp))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before": before, "peak": peak}))


def measure_memory(epochs: int, s: Setup) -> dict[str, dict[str, float]]:
    """Peak RSS of (a) and (c), each in a fresh process."""
    import torch

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        setup_file = Path(tmp) / "setup.pt"
        torch.save({"x": s.x.cpu(), "y": s.y.cpu(), "model0": s.model0, "lr": s.lr,
                    "sched": s.sched, "epochs": epochs, "batch_size": s.batch_size,
                    "steps_per_epoch": s.steps_per_epoch}, setup_file)
        for variant in ("raw", "losslab"):
            proc = subprocess.run([sys.executable, __file__, "--memory-child", variant,
                                   "--epochs", str(epochs), "--setup-file", str(setup_file)],
                                  capture_output=True, text=True, cwd=ROOT, check=True)
            out[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed epochs per fit: 4 x reps (>= 8)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the --memory runs")
    parser.add_argument("--warmup-epochs", type=int, default=2, help="untimed epochs first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: the GPU comparison (a wider CNN, bf16, batch 512)")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast in every variant (on with --device cuda; on CPU, "
                        "to check the GPU row's mixed-precision path)")
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        help="run only these (repeatable)")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory")
    parser.add_argument("--memory-child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--setup-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("overrides", nargs="*", help="extra overrides for (c) (ablations)")
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.epochs, args.setup_file)
        return {}
    import torch

    torch.set_num_threads(args.threads)
    quiet()
    variants = args.variant or list(VARIANTS)
    fits = [v for v in variants if v != "raw"] or ["losslab"]  # each hosts the (a) epochs
    timed = max(8, 4 * args.reps)
    s = Setup(args.warmup_epochs + timed, args.overrides, args.device, args.bf16)
    paired: dict[str, list[tuple[float, float, float, float, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for v in fits:
            clock = PairedEpochs(s, args.warmup_epochs)
            run = run_lightning if v == "lightning" else run_losslab
            run(s, 0, Path(tmp) / v, clock)
            paired[v] = clock.epochs
    model = s.description
    print(f"framework overhead ({args.device}): {model}, batch {s.batch_size}, {timed} timed "
          f"epochs of {s.steps_per_epoch} steps per fit, each paired with a plain-loop epoch; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); wall ms/step median "
          "(min-max) | CPU ms/step")
    results: dict[str, Any] = {"epochs_timed": timed, "steps_per_epoch": s.steps_per_epoch,
                               "reps": args.reps, "model": model, "batch_size": s.batch_size,
                               "device_name": (torch.cuda.get_device_name()
                                               if args.device == "cuda" else "CPU"),
                               "output_dtypes": s.output_dtypes, "variants": {}}

    def row_of(walls: list[float], cpus: list[float]) -> dict[str, Any]:
        ms = statistics.median(walls)
        return {"ms_per_step": ms, "min": min(walls), "max": max(walls), "steps_per_s": 1e3 / ms,
                "samples_per_s": 1e3 * s.batch_size / ms, "cpu_ms_per_step":
                statistics.median(cpus)}

    raw_epochs = [e for v in fits for e in paired[v]]
    rows = {"raw": row_of([1e3 * e[2] / e[4] for e in raw_epochs],
                          [1e3 * e[3] / e[4] for e in raw_epochs])}
    for v in fits:
        eps = paired[v]
        rows[v] = row_of([1e3 * e[0] / e[4] for e in eps], [1e3 * e[1] / e[4] for e in eps])
        rows[v]["ratio_to_raw"] = statistics.median(e[0] / e[2] for e in eps)
        rows[v]["cpu_ratio_to_raw"] = statistics.median(e[1] / e[3] for e in eps)
        rows[v]["ratio_of_sums"] = sum(e[0] for e in eps) / sum(e[2] for e in eps)
    for v in ("raw", *fits):
        row = rows[v]
        line = (f"  {LABELS[v]:34s} {row['ms_per_step']:6.2f} ({row['min']:.2f}-"
                f"{row['max']:.2f}) | {row['cpu_ms_per_step']:6.2f}  "
                f"{row['steps_per_s']:6.1f} steps/s")
        if v != "raw":
            line += (f"   {row['ratio_to_raw']:.2f}x (a) | CPU {row['cpu_ratio_to_raw']:.2f}x "
                     f"| summed {row['ratio_of_sums']:.2f}x")
        results["variants"][v] = row
        print(line)
    if args.memory:
        mem = measure_memory(args.epochs, s)
        allowance = mem["losslab"]["before"] - mem["raw"]["before"]
        budget = 1.2 * mem["raw"]["peak"] + allowance
        results["memory_mb"] = {**mem, "framework_allowance": allowance,
                                "budget_1.2x_raw_plus_allowance": budget,
                                "within_budget": mem["losslab"]["peak"] <= budget}
        print(f"  peak RSS: (a) {mem['raw']['peak']:.0f} MB, (c) {mem['losslab']['peak']:.0f} MB;"
              f" framework allowance (set-up RSS (c) - (a)) {allowance:.0f} MB; "
              f"budget 1.2 x (a) + allowance = {budget:.0f} MB -> "
              f"{'within' if results['memory_mb']['within_budget'] else 'OVER'}")
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
