"""A small bidirectional GRU for sequences such as MNIST-1D: (channels, length) inputs are read
as `length` time steps of `channels` features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from losslab.errors import UserError, check_range
from losslab.models.init import apply_init


class GRU(nn.Module):
    """GRU over time (both directions) -> [mean over time, last states] -> dropout -> Linear.

    h_t = (1 - z_t) * n_t + z_t * h_{t-1}, z_t = sigmoid(W_z x_t + U_z h_{t-1}),
    n_t = tanh(W_n x_t + r_t * (U_n h_{t-1})), r_t = sigmoid(W_r x_t + U_r h_{t-1}).
    """

    def __init__(self, input_shape: Sequence[int], out_dim: int, hidden: int = 64,
                 num_layers: int = 1, bidirectional: bool = True, dropout: float = 0.0,
                 init: str = "default", init_gain: float | None = None) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise UserError(f"model 'gru' needs inputs shaped (channels, length); this data set "
                            f"gives samples of shape {tuple(input_shape)}. Use model=mlp or "
                            "model=linear, or a sequence data set (mnist1d).")
        check_range("model 'gru'", "hidden", hidden, low=1)
        check_range("model 'gru'", "num_layers", num_layers, low=1)
        check_range("model 'gru'", "dropout", dropout, low=0, high=1, high_inclusive=False)
        self.rnn = nn.GRU(int(input_shape[0]), int(hidden), num_layers=int(num_layers),
                          batch_first=True, bidirectional=bidirectional)
        directions = self.directions = 2 if bidirectional else 1
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(2 * directions * int(hidden), out_dim)
        apply_init(self, init, init_gain)

    def forward(self, x: Tensor) -> Tensor:
        out, last = self.rnn(x.transpose(1, 2))           # out: [N, T, dirs * hidden]
        final = last[-self.directions:]                   # the last layer's final states
        features = torch.cat([out.mean(dim=1), final.transpose(0, 1).flatten(1)], dim=1)
        return self.head(self.drop(features))
