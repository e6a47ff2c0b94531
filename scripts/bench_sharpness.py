"""Cost of one sharpness evaluation (the `sharpness` callback) on the default run's model.

The default config (MNIST-1D, MLP 3x256 GELU, ce, batch 100) at its initial weights; one
evaluation = the callback's defaults (conf/callbacks/sharpness.yaml): top eigenvalue from 20
Lanczos steps + Hutchinson trace from 10 probes on num_batches=1 batch, i.e. 30 Hessian-vector
products. Also timed: one Hessian-vector product and one training step (forward + backward +
Adam), to put the number in proportion. Median of `--reps` repetitions after one warm-up.

    python scripts/bench_sharpness.py [--threads 1] [--reps 5] [--json bench/sharpness.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(fn: Callable[[], object], reps: int) -> tuple[float, list[float]]:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args, overrides = parser.parse_known_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from losslab.diagnostics.config import compose_config
    from losslab.diagnostics.hessian import FlatLoss, sharpness
    from losslab.run import build_task

    settings = yaml.safe_load((ROOT / "src/losslab/conf/callbacks/sharpness.yaml").read_text())
    settings = settings["sharpness"]
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config(overrides, out, ROOT / "data")
        torch.manual_seed(int(cfg.seed))
        task, dm = build_task(cfg)
    dm.setup("fit")
    x, y = dm.splits["train"]
    n = int(settings["num_batches"]) * int(dm.batch_size)
    x, y = x[:n], y[:n]
    model, loss = task.model, task.loss_fn
    its, probes = int(settings["iterations"]), int(settings["trace_probes"])

    evaluation, all_times = median_seconds(
        lambda: sharpness(model, loss, x, y, its, probes, str(settings["method"])), args.reps)
    flat = FlatLoss(model.eval(), loss, x, y)
    v = torch.randn(flat.numel)
    hvp, _ = median_seconds(lambda: flat.hvp(v), args.reps * 4)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad()
        loss(model(x), y).mean().backward()
        opt.step()

    train_step, _ = median_seconds(step, args.reps * 4)
    result = {
        "model": f"{cfg.model.name} {list(cfg.model.hidden)} {cfg.model.activation}",
        "parameters": flat.numel, "samples": n, "iterations": its, "trace_probes": probes,
        "threads": torch.get_num_threads(), "seconds_per_evaluation": evaluation,
        "seconds_all": all_times, "seconds_per_hvp": hvp, "seconds_per_train_step": train_step,
        "evaluation_in_train_steps": evaluation / train_step,
    }
    print(f"sharpness evaluation ({its} Lanczos + {probes} Hutchinson HVPs, {n} samples, "
          f"{flat.numel} parameters, {result['threads']} thread(s)): "
          f"{evaluation:.3f} s (median of {args.reps}); one HVP {hvp * 1e3:.1f} ms; one "
          f"training step {train_step * 1e3:.1f} ms -> one evaluation = "
          f"{evaluation / train_step:.0f} training steps")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
