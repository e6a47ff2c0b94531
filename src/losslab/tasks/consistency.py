"""Consistency regularisation: w * mean_i ||f(x_i) - f(aug(x_i))||^2 (the Pi-model term).

Both branches carry gradients (no stop-gradient), so the model is pushed to be invariant to the
augmentation. `noise` adds N(0, noise_std^2) to the inputs; `shift` rolls each sample along its
last axis by a random integer in [-max_shift, max_shift] (translation for 1D signals/images).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from losslab.errors import check_choice, check_range


def make_augmentation(augmentation: str = "noise", noise_std: float = 0.1,
                      max_shift: int = 2) -> Callable[[Tensor], Tensor]:
    """The augmentation used by the consistency term."""
    check_choice("task.consistency", "augmentation", augmentation, ("noise", "shift"))
    check_range("task.consistency", "noise_std", noise_std, low=0)
    check_range("task.consistency", "max_shift", max_shift, low=0)

    def noise(x: Tensor) -> Tensor:
        return x + noise_std * torch.randn_like(x)

    def shift(x: Tensor) -> Tensor:
        n, length = x.shape[0], x.shape[-1]
        s = torch.randint(-max_shift, max_shift + 1, (n,), device=x.device)
        pos = (torch.arange(length, device=x.device) - s[:, None]) % length   # [N, L]
        index = pos.view(n, *([1] * (x.dim() - 2)), length).expand_as(x)
        return torch.gather(x, -1, index)

    return noise if augmentation == "noise" else shift


def consistency_term(model: torch.nn.Module, x: Tensor, out: Tensor,
                     augment: Callable[[Tensor], Tensor]) -> Tensor:
    """mean_i ||f(x_i) - f(aug(x_i))||^2 with f(x) = `out` already computed."""
    return (model(augment(x)) - out).square().flatten(1).sum(1).mean()
