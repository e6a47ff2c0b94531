"""Losses: `LOSSES.build(name, **params)`; every loss returns [N] with reduction='none'."""

from losslab.losses import classification, regression  # noqa: F401  (registration)
from losslab.losses.base import LOSSES, Loss, reduce

__all__ = ["LOSSES", "Loss", "reduce"]
