"""Loss landscapes: a 1-D line between two weight vectors and a 2-D filter-normalised surface.

    1-D (Goodfellow et al. 2015):  L((1 - a) theta_0 + a theta_1)  for a in [a_min, a_max],
                                   theta_0 = initial, theta_1 = final weights
    2-D (Li et al. 2018):          L(theta* + a d1 + b d2)  on a grid in [-span, span]^2

with random Gaussian directions d, filter-normalised: every filter d_i (row i of a weight matrix,
output channel i of a convolution kernel) is rescaled to the norm of the same filter of theta*,
d_i <- d_i ||theta*_i|| / ||d_i||, so a step of 1 along d changes every filter by its own size
and surfaces of networks with differently scaled layers (or scale-invariant ones) compare.
Parameters with one dimension (biases, norm scales) get d = 0 (Li et al.'s default).
The loss is the mean per-sample data loss on fixed batches, in eval mode (dropout off).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

Params = dict[str, Tensor]
Progress = Callable[[int], None] | None


def parameters_of(model: nn.Module) -> Params:
    """A detached copy of the trainable parameters."""
    return {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


def filter_normalized_direction(center: Params, generator: torch.Generator) -> Params:
    """A random direction with each filter scaled to the norm of theta*'s filter (see above)."""
    direction = {}
    for name, p in center.items():
        if p.dim() <= 1:
            direction[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        p_norm = p.flatten(1).norm(dim=1)
        direction[name] = d * (p_norm / d_norm).view(-1, *([1] * (p.dim() - 1)))
    return direction


class Evaluator:
    """Mean loss of `model` with its parameters set to given values, on fixed (x, y) batches."""

    def __init__(self, model: nn.Module, loss: Callable[[Tensor, Tensor], Tensor],
                 batches: Sequence[tuple[Tensor, Tensor]]) -> None:
        self.model, self.loss, self.batches = model, loss, list(batches)
        self.params = {k: p for k, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def set(self, values: Params) -> None:
        for k, p in self.params.items():
            p.copy_(values[k])

    @torch.no_grad()
    def combine(self, base: Params, terms: Sequence[tuple[float, Params]]) -> None:
        """Parameters <- base + sum_k c_k d_k."""
        for k, p in self.params.items():
            p.copy_(base[k])
            for c, d in terms:
                p.add_(d[k], alpha=c)

    @torch.no_grad()
    def __call__(self) -> float:
        was = self.model.training
        self.model.eval()
        try:
            total, count = 0.0, 0
            for x, y in self.batches:
                out = self.loss(self.model(x), y)
                total += float(out.sum()) if out.dim() else float(out) * len(y)
                count += len(y)
        finally:
            self.model.train(was)
        return total / max(count, 1)


def interpolate(evaluate: Evaluator, start: Params, end: Params, alphas: Sequence[float],
                progress: Progress = None) -> list[float]:
    """L((1 - a) start + a end) for each a (the parameters are left at `end`)."""
    diff = {k: end[k] - start[k] for k in end}
    values = []
    for a in alphas:
        evaluate.combine(start, [(float(a), diff)])
        values.append(evaluate())
        if progress:
            progress(1)
    evaluate.set(end)
    return values


def surface(evaluate: Evaluator, center: Params, d1: Params, d2: Params,
            coords: Sequence[float], progress: Progress = None) -> np.ndarray:
    """[len(coords), len(coords)] losses L(center + a d1 + b d2), rows b, columns a
    (the parameters are left at `center`)."""
    grid = np.empty((len(coords), len(coords)))
    for i, b in enumerate(coords):
        for j, a in enumerate(coords):
            evaluate.combine(center, [(float(a), d1), (float(b), d2)])
            grid[i, j] = evaluate()
            if progress:
                progress(1)
    evaluate.set(center)
    return grid
