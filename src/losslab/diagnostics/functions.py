"""A custom `torch.autograd.Function` with a hand-written backward: SiLU (swish).

    forward   f(x)  = x s(x),            s = sigmoid(x)
    backward  f'(x) = s (1 + x (1 - s))  ->  grad_in = grad_out * f'(x)

The forward saves only x; the backward recomputes s from it, so its result is itself
differentiable (double backward, Hessian-vector products stay exact).
`losslab.diagnostics.gradcheck` (and `torch.autograd.gradcheck`) confirm the derivative; the
registry's losses use the same pattern for focal, log-cosh and pairwise distances
(losslab.losses.functional).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SiLUFunction(torch.autograd.Function):
    """f(x) = x sigmoid(x); df/dx = s (1 + x (1 - s))."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad_out * s * (1.0 + x * (1.0 - s))


def silu(x: Tensor) -> Tensor:
    """SiLU with the hand-written backward above."""
    return SiLUFunction.apply(x)


class HandSiLU(nn.Module):
    """nn.Module wrapper, a drop-in for nn.SiLU."""

    def forward(self, x: Tensor) -> Tensor:
        return silu(x)
