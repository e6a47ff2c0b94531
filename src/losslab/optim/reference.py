"""Readable reference optimizers, written from the update equations.

Each class is a `torch.optim.Optimizer` with torch-compatible arguments and defaults, and it
reproduces `torch.optim`'s class of the same name (tested to 1e-6 over 100 float64 steps).
They loop over parameters one at a time: slow, but every line is one term of the equation.
Select them with `impl: reference` in the optimizer config.

Notation: theta the parameter, g its gradient, t the step count (from 1), lr the learning rate,
lambda the weight decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from losslab.errors import UserError


def _closure_loss(closure: Callable[[], Any] | None) -> Any:
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay.

        g   <- g + lambda * theta                       (weight decay, coupled L2)
        b_1 <- g                                        (first step: no dampening)
        b_t <- mu * b_{t-1} + (1 - dampening) * g       (momentum buffer, mu > 0)
        d   <- g + mu * b_t   if nesterov  else  b_t    (d = g when mu = 0)
        theta <- theta - lr * d
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        if nesterov and (momentum <= 0 or dampening != 0):
            raise UserError("optimizer 'sgd': nesterov needs momentum > 0 and dampening = 0.")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, mu, damp = group["lr"], group["momentum"], group["dampening"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"] != 0:
                    g = g + group["weight_decay"] * p
                if mu != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        buf = g.clone()
                    else:
                        buf = mu * state["momentum_buffer"] + (1 - damp) * g
                    state["momentum_buffer"] = buf
                    g = g + mu * buf if group["nesterov"] else buf
                p.sub_(lr * g)
        return loss


class RMSprop(Optimizer):
    """RMSprop (Hinton 2012) with optional centering and momentum.

        g   <- g + lambda * theta
        v_t <- alpha * v_{t-1} + (1 - alpha) * g^2                   (v_0 = 0)
        m_t <- alpha * m_{t-1} + (1 - alpha) * g                     (centered only, m_0 = 0)
        s   <- sqrt(v_t - m_t^2) + eps   if centered  else  sqrt(v_t) + eps
        b_t <- mu * b_{t-1} + g / s ;  theta <- theta - lr * b_t     (mu > 0)
        theta <- theta - lr * g / s                                  (mu = 0)
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, alpha, eps, mu = group["lr"], group["alpha"], group["eps"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"] != 0:
                    g = g + group["weight_decay"] * p
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.zeros_like(p)
                    if mu > 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["grad_avg"] = torch.zeros_like(p)
                state["step"] += 1
                v = alpha * state["square_avg"] + (1 - alpha) * g * g
                state["square_avg"] = v
                if group["centered"]:
                    m = alpha * state["grad_avg"] + (1 - alpha) * g
                    state["grad_avg"] = m
                    s = (v - m * m).sqrt() + eps
                else:
                    s = v.sqrt() + eps
                if mu > 0:
                    buf = mu * state["momentum_buffer"] + g / s
                    state["momentum_buffer"] = buf
                    p.sub_(lr * buf)
                else:
                    p.sub_(lr * g / s)
        return loss


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), optionally AMSGrad (Reddi et al. 2018), coupled L2 decay.

        g     <- g + lambda * theta                  (Adam; AdamW decays theta instead, below)
        m_t   <- beta1 * m_{t-1} + (1 - beta1) * g
        v_t   <- beta2 * v_{t-1} + (1 - beta2) * g^2
        vhat  <- max(vhat_{t-1}, v_t)   if amsgrad  else  v_t
        theta <- theta - lr / (1 - beta1^t) * m_t / (sqrt(vhat / (1 - beta2^t)) + eps)
    """

    decoupled = False

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = (group["lr"], group["betas"], group["eps"],
                                           group["weight_decay"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd != 0:
                    if self.decoupled:
                        p.mul_(1 - lr * wd)
                    else:
                        g = g + wd * p
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m = beta1 * state["exp_avg"] + (1 - beta1) * g
                v = beta2 * state["exp_avg_sq"] + (1 - beta2) * g * g
                state["exp_avg"], state["exp_avg_sq"] = m, v
                if group["amsgrad"]:
                    v = torch.maximum(state["max_exp_avg_sq"], v)
                    state["max_exp_avg_sq"] = v
                denom = v.sqrt() / math.sqrt(1 - beta2**t) + eps
                p.sub_(lr / (1 - beta1**t) * m / denom)
        return loss


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay.

        theta <- theta * (1 - lr * lambda)           (before the Adam update, g is not decayed)
        then the Adam update above with lambda = 0.
    """

    decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)


REFERENCE: dict[str, type[Optimizer]] = {
    "sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW,
}
