"""The Loss contract: per-sample values, a reduction, a kind, validated arguments and shapes."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from losslab.errors import UserError, check_choice, check_range
from losslab.registry import Registry

Reduction = Literal["none", "mean", "sum"]
Kind = Literal["regression", "classification", "embedding"]

LOSSES: Registry[Loss] = Registry("loss")

# Errors torch raises on inputs it cannot use (bad label, mismatched shapes): when one of these
# comes out of a later batch, `forward` re-runs the shape check to turn it into a UserError.
_TORCH_INPUT_ERRORS = (RuntimeError, IndexError, ValueError)
_HALF = (torch.float16, torch.bfloat16)


def reduce(per_sample: Tensor, reduction: str) -> Tensor:
    """Apply 'none' (keep [N]), 'mean' or 'sum' to per-sample losses."""
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    return per_sample.mean()


class Loss(nn.Module):
    """Base class: subclasses implement `per_sample(pred, target) -> [N]`.

    `forward` checks shapes on the first call, computes per-sample losses and reduces them, so
    curriculum and multi-task weighting can always ask for `reduction="none"`. Later calls are not
    re-checked (no host sync per step); if torch rejects a later batch, the check runs again so the
    user still gets a UserError that names the loss and both shapes.

    Class attributes a task may read:
      kind                  "regression" | "classification" | "embedding".
      accepts_single_logit  True if binary data can use one logit per sample (bce, focal, hinge);
                            otherwise a binary task needs two output units.
      binary_only           True if the loss cannot take multi-class logits (bce).
    Instance attribute:
      outputs_per_sample    model outputs per sample a regression loss needs (1, len(quantiles),
                            2 for gaussian_nll); None where the data decides (classes, embedding).

    Subclasses backed by a torch built-in may override `reduced(pred, target, reduction)` to use
    the built-in's fused reduction; it must equal `reduce(per_sample(...), reduction)` (the tests
    check this). The older `reduced(pred, target)` form still works (see `__init_subclass__`).
    """

    kind: ClassVar[Kind] = "regression"
    accepts_single_logit: ClassVar[bool] = False
    binary_only: ClassVar[bool] = False
    outputs_per_sample: int | None = None

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

    def __init_subclass__(cls, **kwargs: object) -> None:
        """A subclass written for the two-argument `reduced(pred, target)` (which reduces with
        `self.reduction`) keeps working: it is used for that reduction, and a different
        per-call reduction reduces `per_sample` instead."""
        super().__init_subclass__(**kwargs)
        old = cls.__dict__.get("reduced")
        if old is None or len(inspect.signature(old).parameters) != 3:
            return

        def reduced(self: Loss, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
            if reduction == self.reduction:
                return old(self, pred, target)
            return reduce(self.per_sample(pred, target), reduction)

        reduced.__doc__ = old.__doc__
        cls.reduced = reduced  # type: ignore[method-assign]

    def reduced(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        """The 'mean' / 'sum' value; override to use a torch built-in's fused reduction."""
        return reduce(self.per_sample(pred, target), reduction)

    def forward(self, pred: Tensor, target: Tensor, reduction: str | None = None) -> Tensor:
        """The loss with this loss's reduction, or with `reduction` for this call (the task asks
        for 'mean' when no sample weights apply: a built-in's fused mean is cheaper than
        reducing its per-sample output)."""
        reduction = reduction or self.reduction
        if pred.dtype in _HALF:  # mixed precision: losses (logs, exps, sums) are taken in fp32
            pred = pred.float()
        if not self._shapes_checked:
            self.check_shapes(pred, target)
            self._shapes_checked = True
        try:
            if reduction != "none":
                return self.reduced(pred, target, reduction)
            out = self.per_sample(pred, target)
        except _TORCH_INPUT_ERRORS as err:
            self._raise_user_error(pred, target, err)
            raise
        if out.dim() != 1:  # e.g. a later batch broadcast [N, C] against [N]
            self._raise_user_error(pred, target, None)
            raise RuntimeError(f"{self.display_name} returned shape {tuple(out.shape)}, not [N]")
        return out

    def _raise_user_error(self, pred: Tensor, target: Tensor, cause: Exception | None) -> None:
        """Re-run the shape check; if it finds the inputs at fault, raise its UserError."""
        try:
            self.check_shapes(pred, target)
        except UserError as user_error:
            raise user_error from cause

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


def as_vector(pred: Tensor) -> Tensor:
    """[N, 1] -> [N]; [N] stays."""
    return pred.squeeze(-1) if pred.dim() == 2 and pred.shape[-1] == 1 else pred


def float_list(owner: str, key: str, value: object) -> list[float]:
    """A list / tuple / ListConfig of numbers from a config as a list of floats, or UserError."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise UserError(f"{owner}: '{key}' must be a list of numbers, got {value!r}.")
    out = []
    for v in list(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UserError(f"{owner}: '{key}' must be a list of numbers, got {value!r}.")
        out.append(float(v))
    if not out:
        raise UserError(f"{owner}: '{key}' must not be empty.")
    return out


def check_number(owner: str, key: str, value: object, **bounds: object) -> float:
    """check_range for a scalar that must not be a list; returns it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{owner}: '{key}' must be a number, got {value!r}.")
    check_range(owner, key, value, **bounds)  # type: ignore[arg-type]
    return float(value)


def is_integral(t: Tensor) -> bool:
    """True for integer / bool tensors and for float tensors holding whole numbers (syncs)."""
    if not t.is_floating_point():
        return True
    return bool(torch.equal(t, t.round()))


def label_range_error(loss: Loss, pred: Tensor, target: Tensor, classes: int) -> UserError | None:
    """UserError if integer labels [N] are not whole numbers in [0, classes) (syncs; first call)."""
    if not is_integral(target):
        return loss.shape_error(pred, target, f"whole-number class labels in [0, {classes})")
    if target.numel():
        lo, hi = int(target.min()), int(target.max())
        if lo < 0 or hi >= classes:
            return loss.shape_error(
                pred, target, f"labels in [0, {classes}) (got labels from {lo} to {hi})"
            )
    return None
