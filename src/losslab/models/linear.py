"""Logistic regression: one Linear layer on the flattened input, p(y | x) = softmax(W x + b)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from losslab.models.init import apply_init


class Linear(nn.Module):
    """x (any shape, flattened) -> W x + b with `out_dim` outputs (the logits)."""

    def __init__(self, input_shape: Sequence[int], out_dim: int, init: str = "default",
                 init_gain: float | None = None) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.head = nn.Linear(math.prod(input_shape), out_dim)
        apply_init(self, init, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.flatten(x))
