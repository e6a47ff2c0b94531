"""losslab: Lightning + Hydra experiments for loss functions, optimizers and gradient behaviour."""

__version__ = "0.1.0"
