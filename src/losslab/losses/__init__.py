"""Losses: `LOSSES.build(name, **params)`; every loss returns [N] with reduction='none'.

regression.py (mse, mae, huber, smooth_l1, log_cosh, quantile, gaussian_nll), classification.py
(bce, ce, focal, hinge, kl), metric.py (contrastive, triplet), wrappers.py (combo);
functional.py holds the math with hand-written backward passes.
"""

from losslab.losses import classification, metric, regression, wrappers  # noqa: F401
from losslab.losses.base import LOSSES, Loss, reduce

__all__ = ["LOSSES", "Loss", "reduce"]
