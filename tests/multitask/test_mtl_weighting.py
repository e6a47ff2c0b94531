"""Weighting strategies against their formulas: Kendall terms and optimum, DWA, GradNorm."""

from __future__ import annotations

import math

import pytest
import torch

from losslab.errors import UserError
from losslab.multitask.weighting import (
    DWAWeighting,
    FixedWeighting,
    GradNormWeighting,
    UncertaintyWeighting,
    build_weighting,
    dwa_weights,
)
from losslab.optim.param_groups import build_param_groups

TASKS, KINDS = ["a", "b"], ["regression", "classification"]


def test_kendall_terms_match_formula():
    w = UncertaintyWeighting(TASKS, KINDS)
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.7, -1.2]))
    losses = torch.tensor([2.0, 0.5])
    total, weights = w.combine(losses)
    s1, s2 = 0.7, -1.2
    expected = 0.5 * math.exp(-s1) * 2.0 + 0.5 * s1 + math.exp(-s2) * 0.5 + 0.5 * s2
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert weights.tolist() == pytest.approx([0.5 * math.exp(-s1), math.exp(-s2)], rel=1e-6)
    assert w.sigma().tolist() == pytest.approx([math.exp(s1 / 2), math.exp(s2 / 2)], rel=1e-6)


@pytest.mark.parametrize("loss", [0.01, 1.0, 9.0])
def test_kendall_regression_optimum_is_log_of_the_loss(loss):
    """argmin_s 1/2 e^{-s} L + 1/2 s = log L, i.e. sigma^2 = L (not sqrt L)."""
    w = UncertaintyWeighting(["a"], ["regression"])
    opt = torch.optim.LBFGS([w.log_vars], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        total = w.combine(torch.tensor([loss]))[0]
        total.backward()
        return total

    opt.step(closure)
    assert w.log_vars.item() == pytest.approx(math.log(loss), abs=1e-3)
    assert w.sigma().item() ** 2 == pytest.approx(loss, rel=1e-3)
    s = torch.linspace(math.log(loss) - 2, math.log(loss) + 2, 4001)  # grid check too
    obj = 0.5 * torch.exp(-s) * loss + 0.5 * s
    assert s[obj.argmin()].item() == pytest.approx(math.log(loss), abs=2e-3)


def test_learned_weights_get_no_weight_decay():
    for w in (UncertaintyWeighting(TASKS, KINDS), GradNormWeighting(TASKS, KINDS)):
        groups = build_param_groups(torch.nn.ModuleDict({"weighting": w}), weight_decay=0.1)
        assert all(g["weight_decay"] == 0.0 for g in groups)


def test_dwa_known_case():
    w = DWAWeighting(["a", "b", "c"], ["regression"] * 3, temperature=2.0)
    w.end_epoch(torch.tensor([1.0, 2.0, 4.0]))
    assert w.weights.tolist() == [1.0, 1.0, 1.0]  # the first two epochs use w = 1
    w.end_epoch(torch.tensor([0.5, 2.0, 6.0]))  # r = [0.5, 1.0, 1.5]
    e = [math.exp(r / 2.0) for r in (0.5, 1.0, 1.5)]
    assert w.weights.tolist() == pytest.approx([3 * x / sum(e) for x in e], rel=1e-6)
    assert w.weights.sum().item() == pytest.approx(3.0)
    assert dwa_weights(torch.ones(2), torch.ones(2), 1.0).tolist() == [1.0, 1.0]


def test_gradnorm_update_on_known_case():
    """L_i = c_i * ||W||^2 / 2, so ||grad_W L_i|| = c_i ||W||; hand-computed GradNorm gradient."""
    w = GradNormWeighting(["a", "b"], ["regression"] * 2, alpha=1.0)
    shared = torch.nn.Parameter(torch.tensor([3.0, 4.0]))  # ||W|| = 5
    c = torch.tensor([1.0, 3.0])
    losses = c * shared.square().sum() / 2
    w.combine(losses, shared)  # first step: L(0) = L, so r = 1
    g = torch.tensor([5.0, 15.0])  # w_i ||grad_W L_i|| with w = 1
    assert w.last_grad_loss.item() == pytest.approx((g - g.mean()).abs().sum().item())
    w.weights.grad = None
    w.last_grad_loss.backward()
    # d/dw_i |w_i g_i - mean(g)|: sign(g_i - mean) * g_i  -> [-5, +15]
    assert w.weights.grad.tolist() == pytest.approx([-5.0, 15.0])
    with torch.no_grad():
        w.weights -= 0.01 * w.weights.grad
    w.after_step()
    assert w.weights.sum().item() == pytest.approx(2.0)
    assert w.weights[0] > w.weights[1]  # the task with the larger gradient is down-weighted


def test_total_loss_gradient_reaches_weights_only_through_gradnorm_term():
    w = GradNormWeighting(["a", "b"], ["regression"] * 2)
    total, weights = w.combine(torch.tensor([1.0, 2.0], requires_grad=True))  # no shared
    assert torch.autograd.grad(total, w.weights, allow_unused=True)[0] is None
    assert weights.tolist() == [1.0, 1.0]


def test_fixed_weights_errors_name_the_tasks():
    with pytest.raises(UserError, match=r"3 weights.*2 tasks \(a, b\)"):
        FixedWeighting(TASKS, KINDS, weights=[1, 2, 3])
    with pytest.raises(UserError, match="missing"):
        FixedWeighting(TASKS, KINDS, weights={"a": 1.0, "c": 2.0})
    with pytest.raises(UserError, match="needs 'weights'"):
        FixedWeighting(TASKS, KINDS)
    total, _ = FixedWeighting(TASKS, KINDS, weights={"b": 2.0, "a": 0.5}).combine(
        torch.tensor([2.0, 3.0]))
    assert total.item() == pytest.approx(7.0)


def test_unknown_weighting_is_a_user_error():
    with pytest.raises(UserError, match="uncertainty"):
        build_weighting({"weighting": "uncertanity"}, TASKS, KINDS)
    assert type(build_weighting({"weighting": None}, TASKS, KINDS)).__name__ == "EqualWeighting"
