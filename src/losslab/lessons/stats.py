"""Numbers the framework does not log: predictions of a checkpoint, recall, coverage, sparsity,
and the variance of mini-batch gradients across batches."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from losslab.lessons.runner import RunResult


@torch.no_grad()
def predictions(result: RunResult, split: str = "test") -> tuple[Tensor, Tensor, Tensor]:
    """(x, y, model output) on a split, from the run's best checkpoint."""
    task, dm = result.load()
    x, y = dm.splits[split]
    return x, y, task.model(x)


def binary_recall_precision(logits: Tensor, y: Tensor, threshold: float = 0.5
                            ) -> tuple[float, float, float]:
    """(recall, precision, F1) of the positive class for one-logit or two-logit outputs."""
    if logits.dim() > 1 and logits.shape[-1] == 2:
        p = torch.softmax(logits, dim=-1)[:, 1]
    else:
        p = torch.sigmoid(logits.reshape(-1))
    pred = p >= threshold
    pos = y.reshape(-1).bool()
    tp = float((pred & pos).sum())
    recall = tp / max(float(pos.sum()), 1.0)
    precision = tp / max(float(pred.sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return recall, precision, f1


def sparsity(model: nn.Module, tol: float = 1e-3) -> float:
    """Fraction of weight-matrix entries with |w| < tol (biases excluded)."""
    weights = [p.detach().reshape(-1) for p in model.parameters() if p.dim() > 1]
    flat = torch.cat(weights)
    return float((flat.abs() < tol).float().mean())


def distinct_rows(weight: Tensor, tol: float = 1e-6) -> int:
    """How many different rows (units) a weight matrix has: 1 when symmetry was never broken."""
    rows = weight.detach().reshape(weight.shape[0], -1)
    kept: list[Tensor] = []
    for r in rows:
        if not any(torch.allclose(r, k, atol=tol, rtol=0) for k in kept):
            kept.append(r)
    return len(kept)


def gradient_variance(model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor,
                      batch_size: int, batches: int = 32, seed: int = 0) -> tuple[float, float]:
    """(E||g_B - g||², ||g||²): the trace of the covariance of mini-batch gradients of size B
    around the full-data gradient g, over `batches` random batches (model in eval mode)."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()

    def grad(xb: Tensor, yb: Tensor) -> Tensor:
        out = model(xb)
        loss = loss_fn(out, yb).mean()
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                          for p, g in zip(params, gs, strict=True)])

    with torch.enable_grad():
        full = grad(x, y)
        g = torch.Generator().manual_seed(seed)
        dev = []
        for _ in range(batches):
            idx = torch.randperm(len(y), generator=g)[:batch_size]
            dev.append(float((grad(x[idx], y[idx]) - full).pow(2).sum()))
    return sum(dev) / len(dev), float(full.pow(2).sum())


def first_reach(points: list[tuple[int, float]], target: float, above: bool = True) -> int | None:
    """The first x of (x, value) pairs whose value reaches the target (>= or <=)."""
    for x, v in points:
        if (v >= target) if above else (v <= target):
            return x
    return None
