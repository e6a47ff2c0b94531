"""The Loss contract: per-sample values, a reduction, a kind, validated arguments and shapes."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from losslab.errors import UserError, check_choice
from losslab.registry import Registry

Reduction = Literal["none", "mean", "sum"]
Kind = Literal["regression", "classification", "embedding"]

LOSSES: Registry[Loss] = Registry("loss")


def reduce(per_sample: Tensor, reduction: str) -> Tensor:
    """Apply 'none' (keep [N]), 'mean' or 'sum' to per-sample losses."""
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.mean()


class Loss(nn.Module):
    """Base class: subclasses implement `per_sample(pred, target) -> [N]`.

    `forward` checks shapes once (the first call), computes per-sample losses and reduces them,
    so curriculum and multi-task weighting can always ask for `reduction="none"`.
    """

    kind: ClassVar[Kind] = "regression"

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_choice(self.display_name, "reduction", reduction, ("none", "mean", "sum"))
        self.reduction = reduction
        self._shapes_checked = False

    @property
    def display_name(self) -> str:
        return f"loss '{getattr(type(self), 'registry_name', type(self).__name__)}'"

    def check_shapes(self, pred: Tensor, target: Tensor) -> None:
        """Raise UserError when pred/target shapes do not fit this loss. Override per loss."""

    def shape_error(self, pred: Tensor, target: Tensor, expected: str) -> UserError:
        return UserError(
            f"{self.display_name} got pred of shape {tuple(pred.shape)} and target of shape "
            f"{tuple(target.shape)}; it expects {expected}."
        )

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if not self._shapes_checked:
            self.check_shapes(pred, target)
            self._shapes_checked = True
        return reduce(self.per_sample(pred, target), self.reduction)


def as_vector(pred: Tensor) -> Tensor:
    """[N, 1] -> [N]; [N] stays."""
    return pred.squeeze(-1) if pred.dim() == 2 and pred.shape[-1] == 1 else pred


def to_tensor(value: object, like: Tensor | None = None) -> Tensor | None:
    """Lists/tuples/ListConfig from configs become float tensors."""
    if value is None:
        return None
    t = torch.as_tensor(list(value) if not isinstance(value, (int, float)) else value,
                        dtype=torch.float32)
    return t.to(like.device) if like is not None else t
