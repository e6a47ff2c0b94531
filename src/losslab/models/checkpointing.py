"""Activation checkpointing: keep a block's input only and recompute its activations in the
backward pass (Chen et al. 2016). Memory for a block's activations drops from O(block) to
O(input); the cost is one extra forward of the block."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def checkpointed(fn: Callable[[Tensor], Tensor], x: Tensor, module: nn.Module) -> Tensor:
    """fn(x) with its activations recomputed in backward (`use_reentrant=False`).

    The dropout masks are the same in the recomputation (the RNG state is restored), and the
    BatchNorm running statistics of `module` are updated once, not twice: the recomputation
    runs with momentum 0 and the batch counter put back.
    """
    calls = [0]

    def run(h: Tensor) -> Tensor:
        calls[0] += 1
        if calls[0] == 1:
            return fn(h)
        norms = [m for m in module.modules() if isinstance(m, _NORMS) and m.track_running_stats]
        saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
        for m in norms:
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
        try:
            return fn(h)
        finally:
            for m, (momentum, count) in zip(norms, saved, strict=True):
                m.momentum = momentum
                m.num_batches_tracked.copy_(count)

    return checkpoint(run, x, use_reentrant=False)
