"""What `gradcheck` checks: a loss on made-up inputs, or a whole model + loss on a tiny batch.

Loss inputs are float64 and seeded. They include one deliberate edge point per case, so the
non-differentiable points of the catalog show up in the report instead of hiding between random
values: regression sample 0 has pred == target (|r| and the pinball loss at r = 0); classification
sample 0 has score 1 for its own class and 0 elsewhere (the hinge exactly at margin 1).
Both reductions are checked: 'mean' (the fused built-in path) and 'none' (the per-sample path the
training step uses), the latter through a fixed random weighting sum_i w_i l_i so the whole
Jacobian is exercised, not just its column sums.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from losslab.diagnostics.gradcheck import EPS, Check, check_tensors

SAMPLES, CLASSES, EMBED_DIM = 8, 4, 3


@dataclass
class Case:
    """One set of loss inputs: a name, predictions and targets (float64)."""

    name: str
    pred: Tensor
    target: Tensor


def loss_cases(loss: nn.Module, seed: int = 0) -> Iterator[Case]:
    """Inputs fitting `loss`'s kind: regression, multi-class / binary classification, embedding."""
    g = torch.Generator().manual_seed(seed)
    kind = getattr(loss, "kind", "regression")
    n = SAMPLES
    if kind == "regression":
        k = int(getattr(loss, "outputs_per_sample", None) or 1)
        target = torch.randn(n, generator=g, dtype=torch.float64)
        pred = torch.randn(n, k, generator=g, dtype=torch.float64) if k > 1 else \
            torch.randn(n, generator=g, dtype=torch.float64)
        if k == 1:
            pred[0] = target[0]  # residual exactly 0: the kink of |r| and of the pinball loss
        else:
            pred[0, :] = target[0]
        yield Case("regression", pred, target)
    elif kind == "embedding":
        pred = torch.randn(n, EMBED_DIM, generator=g, dtype=torch.float64)
        yield Case("embedding", pred, torch.arange(n) // 2)
    else:
        if not getattr(loss, "binary_only", False):
            logits = torch.randn(n, CLASSES, generator=g, dtype=torch.float64)
            labels = torch.randint(0, CLASSES, (n,), generator=g)
            labels[0] = 0
            logits[0] = torch.tensor([1.0] + [0.0] * (CLASSES - 1))  # f_y - f_c = 1: hinge margin
            yield Case("multi-class", logits, labels)
        if getattr(loss, "accepts_single_logit", False):
            logits = torch.randn(n, generator=g, dtype=torch.float64)
            labels = torch.randint(0, 2, (n,), generator=g)
            labels[0], logits[0] = 1, 1.0  # y f = 1: hinge margin
            if getattr(loss, "binary_only", False):  # bce takes soft targets: check them too
                yield Case("binary", logits, labels.to(torch.float64))
            else:
                yield Case("binary", logits, labels)


def check_loss(loss: nn.Module, label: str, eps: float = EPS, seed: int = 0) -> list[Check]:
    """Check d loss / d pred (and d loss / d target for float targets) for both reductions."""
    loss = loss.double()
    saved = getattr(loss, "reduction", "mean")
    checks = []
    try:
        for case in loss_cases(loss, seed):
            inputs = {"pred": case.pred}
            if case.target.is_floating_point():
                inputs["target"] = case.target
            weights = torch.rand(case.pred.shape[0], generator=torch.Generator().manual_seed(seed),
                                 dtype=torch.float64) + 0.5
            for reduction in ("mean", "none"):
                loss.reduction = reduction

                def fn(case: Case = case, reduction: str = reduction,
                       weights: Tensor = weights) -> Tensor:
                    out = loss(case.pred, case.target)
                    return out if reduction == "mean" else (weights * out).sum()

                group = f"{label} {case.name}, {'mean' if reduction == 'mean' else 'per-sample'}"
                checks += check_tensors(fn, inputs, group=group, eps=eps, seed=seed)
    finally:
        loss.reduction = saved
    return checks


def check_model(model: nn.Module, loss: nn.Module, x: Tensor, y: Tensor, label: str,
                eps: float = EPS, max_elements: int | None = 16, seed: int = 0) -> list[Check]:
    """Check d loss(model(x), y) / d parameter for every parameter tensor, and / d x.

    The model is put in eval mode (dropout off, batch norm on running statistics) and float64;
    `max_elements` elements are sampled per tensor (seeded).
    """
    model = model.double().eval()
    loss = loss.double()
    saved = getattr(loss, "reduction", "mean")
    loss.reduction = "mean"
    x = x.double().clone()
    y = y.double() if y.is_floating_point() else y
    tensors = {name: p for name, p in model.named_parameters() if p.requires_grad}
    tensors["input x"] = x
    try:
        return check_tensors(lambda: loss(model(x), y), tensors, group=label, eps=eps,
                             max_elements=max_elements, seed=seed)
    finally:
        loss.reduction = saved
