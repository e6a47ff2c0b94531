"""Time to accuracy: seconds of training until the MNIST-1D test accuracy first reaches a target
(default 0.68, the MNIST-1D paper's MLP), for losslab's default run and for the plain PyTorch
loop of `bench_framework.py` with the same model, initial weights, optimizer and one-cycle
schedule (60 epochs, as the default run).

Both evaluate the test set after every epoch, outside the timed span; the timed span is the
training epochs (losslab's include its validation pass and every default callback: that is
what a user waits for; the plain loop runs the same validation pass). Runs stop at the target.

    python scripts/bench_tta.py --reps 2 --json bench/tta.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_framework import Setup, compose_default, quiet  # noqa: E402

from losslab.benchmarking import write_json  # noqa: E402


def test_accuracy(model: Any, x: Any, y: Any) -> float:
    import torch

    was = model.training
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(-1) == y).float().mean())
    model.train(was)
    return acc


def raw_tta(s: Setup, data: dict[str, Any], target: float) -> tuple[float | None, int]:
    import torch
    import torch.nn.functional as F

    model = s.model()
    opt, sched = s.optimizer(model.parameters())
    trained, n, bs = 0.0, len(s.x), s.batch_size
    for epoch in range(s.epochs):
        t0 = time.perf_counter()
        model.train()
        for idx in torch.randperm(n).split(bs):
            loss = F.cross_entropy(model(s.x[idx]), s.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        test_accuracy(model, *data["val"])  # the validation pass the default run does
        trained += time.perf_counter() - t0
        if test_accuracy(model, *data["test"]) >= target:
            return trained, epoch + 1
    return None, s.epochs


def losslab_tta(s: Setup, data: dict[str, Any], target: float, out: Path
                ) -> tuple[float | None, int]:
    import lightning.pytorch as L

    from losslab.builders import instantiate_group
    from losslab.run import build_task, build_trainer

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.trained, self.t0, self.reached = 0.0, 0.0, None

        def on_train_epoch_start(self, *args: Any) -> None:
            self.t0 = time.perf_counter()

        def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            if trainer.sanity_checking:
                return
            self.trained += time.perf_counter() - self.t0
            if test_accuracy(module.model, *data["test"]) >= target:
                self.reached = (self.trained, trainer.current_epoch + 1)
                trainer.should_stop = True
            self.t0 = time.perf_counter()

    cfg = compose_default(out, [], s.epochs, validate=True)
    task, dm = build_task(cfg)
    task.model.load_state_dict(s.model0.state_dict())
    clock = Clock()
    trainer = build_trainer(cfg, [*instantiate_group(cfg.get("callbacks"), "callback"), clock],
                            instantiate_group(cfg.get("logger"), "logger"))
    trainer.fit(task, datamodule=dm)
    return clock.reached if clock.reached else (None, s.epochs)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.68)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    quiet()
    s = Setup(60, [])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_default(Path(tmp), [], 60)
        from losslab.run import build_task

        _, dm = build_task(cfg)
        dm.setup("fit")
        dm.setup("test")
        data = {k: dm.splits[k][:2] for k in ("val", "test")}
        runs: dict[str, list[tuple[float | None, int]]] = {"raw": [], "losslab": []}
        for rep in range(args.reps):
            for v in (("raw", "losslab") if rep % 2 == 0 else ("losslab", "raw")):
                torch.manual_seed(rep)
                runs[v].append(raw_tta(s, data, args.target) if v == "raw" else
                               losslab_tta(s, data, args.target, Path(tmp) / f"{rep}"))
    results: dict[str, Any] = {"target": args.target, "reps": args.reps}
    for v, rs in runs.items():
        secs = [r[0] for r in rs if r[0] is not None]
        results[v] = {"seconds": statistics.median(secs) if secs else None,
                      "epochs": [r[1] for r in rs], "reached": len(secs), "runs": len(rs)}
    a, c = results["raw"]["seconds"], results["losslab"]["seconds"]
    results["ratio"] = c / a if a and c else None
    print(f"time to {args.target:.2f} test accuracy on MNIST-1D (median of {args.reps}): "
          f"plain loop {a if a is None else round(a, 2)} s (epochs {results['raw']['epochs']}), "
          f"losslab default {c if c is None else round(c, 2)} s (epochs "
          f"{results['losslab']['epochs']})"
          + (f", ratio {results['ratio']:.2f}" if results["ratio"] else ""))
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
