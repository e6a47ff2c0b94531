"""A planted bug for the gradcheck command-line test (imported only by that subprocess):
an MSE whose hand-written backward forgets the factor 2 of d(r^2)/dr = 2r."""

from __future__ import annotations

import torch

from losslab.losses import LOSSES
from losslab.losses.regression import MSELoss


class _WrongSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r):
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, g):
        (r,) = ctx.saved_tensors
        return g * r  # should be 2 r


@LOSSES.register("planted_wrong_mse")
class PlantedWrongMSE(MSELoss):
    def per_sample(self, pred, target):
        return _WrongSquare.apply(self.residual(pred, target))

    def reduced(self, pred, target):
        return self.per_sample(pred, target).mean()
