"""Optimizers, schedulers and parameter groups behind registries.

In a LightningModule::

    def configure_optimizers(self):
        return configure(self.model, self.hparams.optim, self.hparams.scheduler,
                         self.trainer.estimated_stepping_batches, self.trainer.max_epochs)
"""

from losslab.optim.factory import build_optimizer, build_scheduler, configure, to_plain
from losslab.optim.optimizers import CLOSURE_NAMES, OPTIMIZERS, REFERENCE_NAMES
from losslab.optim.param_groups import build_param_groups, describe_param_groups
from losslab.optim.schedulers import SCHEDULERS
from losslab.optim.second_order import NaturalGradient, NewtonCG

__all__ = [
    "CLOSURE_NAMES",
    "OPTIMIZERS",
    "REFERENCE_NAMES",
    "SCHEDULERS",
    "NaturalGradient",
    "NewtonCG",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "configure",
    "describe_param_groups",
    "to_plain",
]
