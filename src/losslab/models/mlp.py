"""Multi-layer perceptron with configurable depth, width, activation, init, norm and skips;
`activation_checkpointing` recomputes each block's activations in backward (less memory)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from losslab.errors import UserError, check_range
from losslab.models.activations import ACTIVATIONS
from losslab.models.checkpointing import checkpointed
from losslab.models.init import apply_init


class Block(nn.Module):
    """Linear -> [BatchNorm] -> activation -> [Dropout], with x + block(x) when residual."""

    def __init__(self, d_in: int, d_out: int, activation: str, batch_norm: bool, dropout: float,
                 residual: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.norm = nn.BatchNorm1d(d_out) if batch_norm else nn.Identity()
        self.act = ACTIVATIONS.build(activation)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.residual = residual and d_in == d_out

    def forward(self, x: Tensor) -> Tensor:
        h = self.drop(self.act(self.norm(self.linear(x))))
        return x + h if self.residual else h


class MLP(nn.Module):
    """x (any shape, flattened) -> hidden blocks -> Linear head with `out_dim` outputs."""

    def __init__(self, input_shape: Sequence[int], out_dim: int,
                 hidden: Sequence[int] | None = (256, 256, 256), depth: int | None = None,
                 width: int | None = None, activation: str = "relu", init: str = "default",
                 init_gain: float | None = None, batch_norm: bool = False, dropout: float = 0.0,
                 residual: bool = False, activation_checkpointing: bool = False) -> None:
        super().__init__()
        check_range("model 'mlp'", "dropout", dropout, low=0, high=1, high_inclusive=False)
        if depth is not None or width is not None:
            if depth is None or width is None:
                raise UserError("model 'mlp': set both 'depth' and 'width' (or 'hidden').")
            check_range("model 'mlp'", "depth", depth, low=0)
            check_range("model 'mlp'", "width", width, low=1)
            hidden = [int(width)] * int(depth)
        hidden = [int(h) for h in (hidden or [])]
        if any(h <= 0 for h in hidden):
            raise UserError(f"model 'mlp': hidden widths must be positive, got {hidden}.")
        d = math.prod(input_shape)
        blocks = []
        for h in hidden:
            blocks.append(Block(d, h, activation, batch_norm, dropout, residual))
            d = h
        self.flatten = nn.Flatten()
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(d, out_dim)
        self.activation_checkpointing = bool(activation_checkpointing)
        apply_init(self, init, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        h = self.flatten(x)
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            for block in self.blocks:  # recompute each block's activations in backward
                h = checkpointed(block, h, block)
            return self.head(h)
        return self.head(self.blocks(h))
