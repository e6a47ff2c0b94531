"""LightningModules."""

from losslab.tasks.supervised import SupervisedTask

__all__ = ["SupervisedTask"]
