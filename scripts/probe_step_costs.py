"""Where a monitored step's extra time goes: two probes behind the README's "Cost" numbers.

1. After `loss.backward()` on the default MNIST-1D MLP (plain loop, fused Adam): the time of a
   trivial Python call, a 4-element native norm call, then the real gradient-norm call twice
   (the second one warm), against the same real call in a tight loop (warm memory).
2. The deep 20 x 512 MLP's parameter shapes from cold memory (a 64 MB buffer is swept before
   each call): the native grouped norm pass, the update ratio's `diff_norms` and its
   `torch._foreach_copy_` snapshot.

    python scripts/probe_step_costs.py            # one torch thread, ~20 s
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from losslab.native import norms as native_norms


def median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1e3


def timed(fn: Callable[[], object], reps: int, before: Callable[[], object] | None = None
          ) -> float:
    samples = []
    for _ in range(reps):
        if before is not None:
            before()
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return median_us(samples)


def after_backward(reps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(),
                          nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x, y = torch.randn(100, 40), torch.randint(0, 10, (100,))
    params = list(model.parameters())
    numels = tuple(p.numel() for p in params)
    groups = tuple(i // 2 for i in range(len(params)))
    tiny = [torch.ones(4)]

    plans: dict[tuple[int, ...], native_norms.GroupedNorms | None] = {}

    def norm(tensors: list[torch.Tensor], sizes: tuple[int, ...], ids: tuple[int, ...],
             n: int) -> None:  # one prepared call per layout, as gradient monitoring makes it
        if sizes not in plans:
            plans[sizes] = native_norms.GroupedNorms.prepare(sizes, ids, n, torch.float32)
        plans[sizes](tensors)  # type: ignore[misc]

    names = ("python call", "tiny native call", "real norm call", "real norm call again")
    samples: dict[str, list[int]] = {k: [] for k in names}
    for _ in range(reps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        grads = [p.grad for p in params]
        t = [time.perf_counter_ns()]
        sum([1, 2, 3])
        t.append(time.perf_counter_ns())
        norm(tiny, (4,), (0,), 1)
        t.append(time.perf_counter_ns())
        norm(grads, numels, groups, 4)  # type: ignore[arg-type]
        t.append(time.perf_counter_ns())
        norm(grads, numels, groups, 4)  # type: ignore[arg-type]
        t.append(time.perf_counter_ns())
        for k, a, b in zip(names, t, t[1:], strict=False):
            samples[k].append(b - a)
        opt.step()
    out = {k: median_us(v) for k, v in samples.items()}
    grads = [p.grad for p in params]
    out["real norm call, tight loop"] = timed(
        lambda: norm(grads, numels, groups, 4), reps)  # type: ignore[arg-type]
    return out


def deep_cold(reps: int) -> dict[str, float]:
    shapes = [(512, 40), (512,)] + [(512, 512), (512,)] * 19 + [(10, 512), (10,)]
    tensors = [torch.randn(s) for s in shapes]
    before = [t.clone() for t in tensors]
    numels = tuple(t.numel() for t in tensors)
    groups = tuple(i // 2 for i in range(len(tensors)))
    sweep = torch.empty(64 * 2**20 // 4)
    flush = lambda: sweep.add_(1.0)  # noqa: E731
    plan = native_norms.GroupedNorms.prepare(numels, groups, len(tensors) // 2, torch.float32)
    return {
        "grouped norms (21 MB)": timed(lambda: plan(tensors), reps, flush),  # type: ignore
        "diff_norms (2 x 21 MB)": timed(lambda: native_norms.diff_norms(tensors, before),
                                        reps, flush),
        "_foreach_copy_ snapshot": timed(lambda: torch._foreach_copy_(before, tensors), reps,
                                         flush),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if native_norms.GroupedNorms.prepare((1,), (0,), 1, torch.float32) is None:
        raise SystemExit("the native norm kernel is not built here (LOSSLAB_NATIVE=0 or no cc)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); medians")
    print("default MLP, right after loss.backward() (µs):")
    for k, v in after_backward(args.reps).items():
        print(f"  {k:32s} {v:8.1f}")
    print("20 x 512 MLP shapes, from cold memory (ms):")
    for k, v in deep_cold(max(args.reps // 8, 10)).items():
        print(f"  {k:32s} {v / 1e3:8.2f}")


if __name__ == "__main__":
    main()
