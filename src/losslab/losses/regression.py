"""Regression losses: pred [N] or [N, 1] (quantile: [N, Q]; gaussian_nll: [N, 2]), target [N]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from losslab.losses.base import LOSSES, Loss, as_vector, check_number, float_list
from losslab.losses.functional import log_cosh


class RegressionLoss(Loss):
    """Shared shape check: one prediction per sample, target [N] (or [N, 1])."""

    kind = "regression"
    outputs_per_sample = 1

    def check_shapes(self, pred: Tensor, target: Tensor) -> None:
        p = as_vector(pred)
        if p.dim() != 1 or as_vector(target).shape != p.shape:
            raise self.shape_error(pred, target, "pred [N] or [N, 1] and target [N]")

    @staticmethod
    def residual(pred: Tensor, target: Tensor) -> Tensor:
        return as_vector(pred) - as_vector(target).to(pred.dtype)

    @staticmethod
    def pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        return as_vector(pred), as_vector(target).to(pred.dtype)


@LOSSES.register("mse", aliases=("l2", "mean_squared_error"))
class MSELoss(RegressionLoss):
    """Mean squared error: l_i = (y_hat_i - y_i)^2; dL/dy_hat_i = 2 (y_hat_i - y_i) / N (mean).

    The default for regression (Gaussian noise); sensitive to outliers since the gradient grows
    with the residual. Equals torch's mse_loss.
    """

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(*self.pair(pred, target), reduction="none")

    def reduced(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        return F.mse_loss(*self.pair(pred, target), reduction=reduction)


@LOSSES.register("mae", aliases=("l1", "mean_absolute_error"))
class MAELoss(RegressionLoss):
    """Mean absolute error: l_i = |y_hat_i - y_i|; gradient sign(y_hat_i - y_i) / N (mean).

    Robust to outliers (bounded gradient); estimates the conditional median. The gradient does not
    shrink near the optimum, so it needs a decaying learning rate to settle. Equals torch l1_loss.
    """

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(*self.pair(pred, target), reduction="none")

    def reduced(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        return F.l1_loss(*self.pair(pred, target), reduction=reduction)


@LOSSES.register("huber")
class HuberLoss(RegressionLoss):
    """Huber loss with r = y_hat - y: 0.5 r^2 if |r| <= delta else delta (|r| - 0.5 delta).

    Gradient r inside the band and delta sign(r) outside: MSE near the optimum, MAE-like
    (bounded) for outliers. Use for regression with heavy-tailed noise; delta is the residual size
    beyond which a point counts as an outlier. Equals torch's huber_loss;
    huber(delta) = delta * smooth_l1(beta=delta).
    """

    def __init__(self, delta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.delta = check_number(self.display_name, "delta", delta, low=0, low_inclusive=False)

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(*self.pair(pred, target), reduction="none", delta=self.delta)

    def reduced(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        return F.huber_loss(*self.pair(pred, target), reduction=reduction, delta=self.delta)


@LOSSES.register("smooth_l1")
class SmoothL1Loss(RegressionLoss):
    """Smooth L1 (Fast R-CNN): 0.5 r^2 / beta if |r| < beta else |r| - 0.5 beta.

    Gradient r / beta inside the band, sign(r) outside (so unlike Huber its outlier gradient does
    not scale with beta); beta = 0 is plain L1. The detection box-regression loss; robust like
    Huber with a gradient capped at 1. Equals torch's smooth_l1_loss.
    """

    def __init__(self, beta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.beta = check_number(self.display_name, "beta", beta, low=0)

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(*self.pair(pred, target), reduction="none", beta=self.beta)

    def reduced(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        return F.smooth_l1_loss(*self.pair(pred, target), reduction=reduction,
                                beta=self.beta)


@LOSSES.register("log_cosh", aliases=("logcosh",))
class LogCoshLoss(RegressionLoss):
    """Log-cosh: l = log cosh(r), r = y_hat - y; gradient tanh(r).

    ~ r^2 / 2 for small residuals and ~ |r| - log 2 for large ones: a smooth Huber with delta ~ 1
    that is twice differentiable everywhere. Computed as |r| + softplus(-2|r|) - log 2, which is
    finite for any r (log(cosh(r)) overflows at |r| > 89 in float32); hand-written backward.
    """

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        return log_cosh(self.residual(pred, target))


@LOSSES.register("quantile", aliases=("pinball",))
class QuantileLoss(RegressionLoss):
    """Pinball loss, averaged over the quantiles tau_k in `quantiles`.

    With u = y - y_hat_k: rho_tau(u) = max(tau u, (tau - 1) u) = u (tau - [u < 0]); so
    d rho / d u = tau (u > 0) or tau - 1 (u < 0) and d l / d y_hat_k = -(that) / Q. Minimising it
    makes y_hat_k the conditional tau_k-quantile (prediction intervals, asymmetric costs);
    tau = 0.5 gives half the absolute error.
    pred is [N, Q] (one column per quantile, in the order given) or [N] / [N, 1] when Q = 1.
    """

    def __init__(self, quantiles: list[float] | tuple[float, ...] = (0.5,),
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        qs = float_list(self.display_name, "quantiles", quantiles)
        for q in qs:
            check_number(self.display_name, "quantiles", q, low=0, high=1,
                         low_inclusive=False, high_inclusive=False)
        self.quantiles = qs
        self.outputs_per_sample = len(qs)
        self.register_buffer("taus", torch.tensor(qs), persistent=False)

    def check_shapes(self, pred: Tensor, target: Tensor) -> None:
        q = len(self.quantiles)
        p = as_vector(pred) if q == 1 else pred
        want = (target.shape[0],) if q == 1 else (target.shape[0], q)
        if as_vector(target).dim() != 1 or tuple(p.shape) != want:
            expected = "pred [N] or [N, 1] and target [N]" if q == 1 else (
                f"pred [N, {q}] (one column per quantile {self.quantiles}) and target [N]")
            raise self.shape_error(pred, target, expected)

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        # rho_tau(u) = max(tau u, (tau - 1) u) = relu(r) - tau r with r = y_hat - y = -u
        # (relu's backward is one cheap kernel; torch.maximum's handles ties and is slow)
        y = as_vector(target).to(pred.dtype)
        if len(self.quantiles) == 1:
            r = as_vector(pred) - y
            return torch.add(torch.relu(r), r, alpha=-self.quantiles[0])
        r = pred - y.unsqueeze(1)
        tau = self.taus.to(device=pred.device, dtype=pred.dtype)
        return torch.addcmul(torch.relu(r), tau, r, value=-1.0).mean(dim=1)

    def point_prediction(self, pred: Tensor) -> Tensor:
        """The column of the quantile closest to the median: what MAE/RMSE/R^2 are computed on."""
        if pred.dim() == 1 or pred.shape[-1] == 1:
            return as_vector(pred)
        k = min(range(len(self.quantiles)), key=lambda i: abs(self.quantiles[i] - 0.5))
        return pred[:, k]


@LOSSES.register("gaussian_nll", aliases=("heteroscedastic",))
class GaussianNLLLoss(RegressionLoss):
    """Gaussian negative log-likelihood with a predicted variance (heteroscedastic regression).

    pred [N, 2] = (mu, s) with s = log sigma^2: l = 0.5 (s + (y - mu)^2 exp(-s)) (+ 0.5 log 2 pi
    if `full`). Gradients: dl/dmu = (mu - y) exp(-s), dl/ds = 0.5 (1 - (y - mu)^2 exp(-s)).
    The log-variance parametrisation needs no positivity constraint or clamp. Equals torch's
    gaussian_nll_loss(mu, y, var=exp(s)) wherever var > its eps (1e-6).
    """

    outputs_per_sample = 2

    def __init__(self, full: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.full = bool(full)

    def check_shapes(self, pred: Tensor, target: Tensor) -> None:
        if pred.dim() != 2 or pred.shape[1] != 2 or as_vector(target).shape != pred.shape[:1]:
            raise self.shape_error(pred, target, "pred [N, 2] (mean, log-variance) and target [N]")

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        mu, log_var = pred.unbind(1)
        y = as_vector(target).to(pred.dtype)
        loss = 0.5 * (log_var + (y - mu).square() * torch.exp(-log_var))
        return loss + 0.5 * math.log(2 * math.pi) if self.full else loss

    def point_prediction(self, pred: Tensor) -> Tensor:
        """The predicted mean (column 0): what MAE/RMSE/R^2 are computed on."""
        return pred[:, 0]
