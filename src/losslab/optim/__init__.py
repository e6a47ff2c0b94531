"""Optimizers and schedulers behind registries."""

from losslab.optim.optimizers import OPTIMIZERS
from losslab.optim.schedulers import SCHEDULERS

__all__ = ["OPTIMIZERS", "SCHEDULERS"]
