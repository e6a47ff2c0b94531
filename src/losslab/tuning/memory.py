"""Memory of one training step (forward + backward), with and without activation checkpointing.

Two measures, both of one `loss.backward()` on a fresh model:

* saved bytes: the tensors autograd keeps for the backward pass (counted with
  `torch.autograd.graph.saved_tensors_hooks`, each storage once); this is the activation
  memory that checkpointing trades for recomputation.
* peak bytes: on CUDA `torch.cuda.max_memory_allocated` above the memory held before the
  step; on CPU the growth of the process's peak resident set (`ru_maxrss`) during the step,
  measured in a fresh subprocess per configuration (the high-water mark only goes up), with
  glibc's mmap threshold fixed at 64 KiB: otherwise freed multi-MiB tensors stay in the heap
  (the threshold adapts upwards) and the RSS shows the allocator's reuse, not live tensors.

    python -m losslab.tuning.memory --model mlp --batch 4096      # table, both settings
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from typing import Any

import torch
from torch import Tensor, nn


def saved_tensor_bytes(model: nn.Module, x: Tensor, y: Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one training forward."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without a storage (views of
            pass                                     # wrapped subclasses): not counted
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return sum(seen.values())


def step_peak_bytes(model: nn.Module, x: Tensor, y: Tensor) -> int:
    """Peak memory growth of one forward + backward (CUDA allocator, or the process RSS)."""
    model.train()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        nn.functional.cross_entropy(model(x), y).backward()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    nn.functional.cross_entropy(model(x), y).backward()
    return int((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)  # KiB


def build(model: str, checkpointing: bool, batch: int, width: int, depth: int,
          device: str) -> tuple[nn.Module, Tensor, Tensor]:
    """A model on MNIST-1D-shaped random data (1 x 40 inputs, 10 classes)."""
    from losslab.models import MODELS

    torch.manual_seed(0)
    kwargs: dict[str, Any] = {"activation_checkpointing": checkpointing}
    if model == "mlp":
        kwargs.update(hidden=[width] * depth, dropout=0.1)
    else:
        kwargs.update(channels=[width] * depth)
    net = MODELS.build(model, input_shape=(1, 40), out_dim=10, **kwargs).to(device)
    x = torch.randn(batch, 1, 40, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return net, x, y


def measure(model: str = "mlp", checkpointing: bool = False, batch: int = 4096,
            width: int = 1024, depth: int = 6, device: str = "cpu") -> dict[str, float]:
    """{"saved_mb", "peak_mb"} of one training step of a fresh model (this process)."""
    net, x, y = build(model, checkpointing, batch, width, depth, device)
    nn.functional.cross_entropy(net(x[:2]), y[:2]).backward()  # warm-up (lazy allocations)
    net.zero_grad(set_to_none=False)
    peak = step_peak_bytes(net, x, y)
    saved = saved_tensor_bytes(net, x, y)
    return {"saved_mb": saved / 2**20, "peak_mb": peak / 2**20}


def measure_in_subprocess(**kwargs: Any) -> dict[str, float]:
    """`measure` in a fresh interpreter (the RSS high-water mark starts from scratch)."""
    args = [sys.executable, "-m", "losslab.tuning.memory", "--json"]
    for k, v in kwargs.items():
        if isinstance(v, bool):
            args += [f"--{k}"] if v else []
        else:
            args += [f"--{k}", str(v)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="memory of one training step, +- checkpointing")
    p.add_argument("--model", choices=("mlp", "cnn1d"), default="mlp")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--json", action="store_true", help="one measurement, as JSON")
    a = p.parse_args(argv)
    common = {"model": a.model, "batch": a.batch, "width": a.width, "depth": a.depth,
              "device": a.device}
    if a.json:
        print(json.dumps(measure(checkpointing=a.checkpointing, **common)))
        return 0
    print(f"{a.model} width {a.width} depth {a.depth}, batch {a.batch}, {a.device}:")
    print("| activation_checkpointing | saved for backward | peak step memory |")
    print("|---|---|---|")
    for ck in (False, True):
        r = measure_in_subprocess(checkpointing=ck, **common)
        print(f"| {str(ck).lower()} | {r['saved_mb']:.0f} MiB | {r['peak_mb']:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
