"""Regression losses against torch built-ins / the published formulas, and their gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losslab.losses import LOSSES

torch.manual_seed(0)
F64 = torch.float64


def data(n: int = 32, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return (torch.randn(n, generator=g, dtype=F64) * scale,
            torch.randn(n, generator=g, dtype=F64) * scale)


def grad_of(name: str, pred: torch.Tensor, target: torch.Tensor, **params) -> torch.Tensor:
    pred = pred.clone().requires_grad_()
    LOSSES.build(name, **params)(pred, target).backward()
    return pred.grad


@pytest.mark.parametrize(
    ("name", "params", "reference"),
    [
        ("mse", {}, lambda p, t: F.mse_loss(p, t, reduction="none")),
        ("mae", {}, lambda p, t: F.l1_loss(p, t, reduction="none")),
        ("l1", {}, lambda p, t: (p - t).abs()),
        ("huber", {"delta": 0.5}, lambda p, t: F.huber_loss(p, t, reduction="none", delta=0.5)),
        ("huber", {"delta": 2.0}, lambda p, t: F.huber_loss(p, t, reduction="none", delta=2.0)),
        ("smooth_l1", {"beta": 0.5},
         lambda p, t: F.smooth_l1_loss(p, t, reduction="none", beta=0.5)),
        ("smooth_l1", {"beta": 0.0}, lambda p, t: (p - t).abs()),
        ("log_cosh", {}, lambda p, t: torch.log(torch.cosh(p - t))),
    ],
)
def test_matches_reference(name, params, reference) -> None:
    pred, target = data()
    fn = LOSSES.build(name, reduction="none", **params)
    torch.testing.assert_close(fn(pred, target), reference(pred, target))
    # [N, 1] predictions and targets are the same as [N]
    torch.testing.assert_close(fn(pred[:, None], target[:, None]), reference(pred, target))


def test_huber_is_delta_times_smooth_l1() -> None:
    pred, target = data()
    huber = LOSSES.build("huber", delta=1.7)(pred, target)
    smooth = LOSSES.build("smooth_l1", beta=1.7)(pred, target)
    torch.testing.assert_close(huber, 1.7 * smooth)


def test_analytic_gradients() -> None:
    pred, target = data(n=40)
    n = len(pred)
    r = pred - target
    # MSE: 2 (y_hat - y) / n
    torch.testing.assert_close(grad_of("mse", pred, target), 2 * r / n)
    # MAE: sign(r) / n
    torch.testing.assert_close(grad_of("mae", pred, target), torch.sign(r) / n)
    # Huber: r inside the band, delta sign(r) outside, / n
    torch.testing.assert_close(grad_of("huber", pred, target, delta=1.5), r.clamp(-1.5, 1.5) / n)
    # smooth L1: r / beta inside, sign(r) outside
    torch.testing.assert_close(grad_of("smooth_l1", pred, target, beta=2.0),
                               (r / 2.0).clamp(-1, 1) / n)
    # log-cosh: tanh(r)
    torch.testing.assert_close(grad_of("log_cosh", pred, target, reduction="sum"), torch.tanh(r))
    # pinball, u = y - y_hat: d/dy_hat = -tau (u > 0), 1 - tau (u < 0)
    tau = 0.2
    u = target - pred
    expected = torch.where(u > 0, -tau, 1 - tau).to(F64)
    torch.testing.assert_close(grad_of("quantile", pred, target, quantiles=[tau],
                                       reduction="sum"), expected)


def test_gradients_match_finite_differences() -> None:
    """The analytic gradients above, checked numerically (central differences)."""
    pred, target = data(n=8)
    for name in ("mse", "huber", "log_cosh", "quantile"):
        fn = LOSSES.build(name, reduction="mean")
        g = grad_of(name, pred, target)
        h = 1e-6
        for i in range(len(pred)):
            e = torch.zeros_like(pred)
            e[i] = h
            fd = (fn(pred + e, target) - fn(pred - e, target)) / (2 * h)
            assert abs(fd.item() - g[i].item()) < 1e-6, (name, i)


def test_log_cosh_is_stable() -> None:
    x = torch.tensor([-1e4, -100.0, -1e-3, 0.0, 1e-3, 100.0, 1e4], requires_grad=True)
    loss = LOSSES.build("log_cosh", reduction="none")(x, torch.zeros(7))
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss[[0, 1, 5, 6]], x.detach().abs()[[0, 1, 5, 6]] - math.log(2))
    loss.sum().backward()
    torch.testing.assert_close(x.grad, torch.tanh(x.detach()))
    assert loss[3].item() == 0.0


def pinball(pred: torch.Tensor, target: torch.Tensor, taus: list[float]) -> torch.Tensor:
    """Koenker & Bassett: rho_tau(u) = u (tau - 1[u < 0]), u = y - y_hat; mean over quantiles."""
    cols = []
    for k, tau in enumerate(taus):
        u = target - pred[:, k]
        cols.append(u * (tau - (u < 0).to(u.dtype)))
    return torch.stack(cols, 1).mean(1)


def test_quantile() -> None:
    pred, target = data()
    taus = [0.1, 0.5, 0.9]
    preds = torch.stack([pred - 1, pred, pred + 1], 1)
    fn = LOSSES.build("quantile", quantiles=taus, reduction="none")
    torch.testing.assert_close(fn(preds, target), pinball(preds, target, taus))
    # tau = 0.5 is half the absolute error; [N] and [N, 1] predictions for one quantile
    median = LOSSES.build("quantile", quantiles=(0.5,), reduction="none")
    torch.testing.assert_close(median(pred, target), 0.5 * (pred - target).abs())
    torch.testing.assert_close(median(pred[:, None], target), 0.5 * (pred - target).abs())


def test_quantile_minimiser_is_the_quantile() -> None:
    """Minimising the mean pinball loss over a constant gives the empirical tau-quantile."""
    y = torch.randn(1001, dtype=F64)
    fn = LOSSES.build("quantile", quantiles=[0.9])
    grid = torch.linspace(-3, 3, 6001, dtype=F64)
    losses = torch.stack([fn(c.expand(len(y)), y) for c in grid])
    best = grid[losses.argmin()]
    assert abs(best - torch.quantile(y, 0.9)) < 2e-3


@pytest.mark.parametrize("full", [False, True])
def test_gaussian_nll(full: bool) -> None:
    g = torch.Generator().manual_seed(3)
    pred = torch.randn(50, 2, generator=g, dtype=F64)
    target = torch.randn(50, generator=g, dtype=F64)
    fn = LOSSES.build("gaussian_nll", full=full, reduction="none")
    mu, log_var = pred[:, 0], pred[:, 1]
    ref = F.gaussian_nll_loss(mu, target, log_var.exp(), full=full, reduction="none")
    torch.testing.assert_close(fn(pred, target), ref)
    # analytic gradients
    p = pred.clone().requires_grad_()
    LOSSES.build("gaussian_nll", reduction="sum")(p, target).backward()
    r2 = (target - mu) ** 2
    torch.testing.assert_close(p.grad[:, 0], (mu - target) * torch.exp(-log_var))
    torch.testing.assert_close(p.grad[:, 1], 0.5 * (1 - r2 * torch.exp(-log_var)))


def test_float32_targets_follow_prediction_dtype() -> None:
    pred = torch.randn(5, dtype=F64)
    target = torch.randn(5, dtype=torch.float32)
    for name in ("mse", "mae", "huber", "smooth_l1", "log_cosh", "quantile"):
        assert LOSSES.build(name)(pred, target).dtype == F64
