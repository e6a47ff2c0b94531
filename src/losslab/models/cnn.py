"""Small CNNs: `cnn1d` for sequences such as MNIST-1D, `cnn2d` for images such as digits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from losslab.errors import UserError, check_range
from losslab.models.activations import ACTIVATIONS
from losslab.models.checkpointing import checkpointed
from losslab.models.init import apply_init


def _conv_stack(dims: int, in_ch: int, channels: Sequence[int], kernel_size: int,
                activation: str, batch_norm: bool, pool_every: int) -> nn.Sequential:
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    norm = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    pool = nn.MaxPool1d if dims == 1 else nn.MaxPool2d
    layers: list[nn.Module] = []
    c = in_ch
    for i, out in enumerate(channels):
        layers += [conv(c, int(out), kernel_size, padding=kernel_size // 2)]
        layers += [norm(int(out))] if batch_norm else []
        layers += [ACTIVATIONS.build(activation)]
        if pool_every and (i + 1) % pool_every == 0 and i + 1 < len(channels):
            layers += [pool(2)]
        c = int(out)
    return nn.Sequential(*layers)


class CNN(nn.Module):
    """Conv blocks -> global average + max pooling -> dropout -> Linear head."""

    def __init__(self, dims: int, input_shape: Sequence[int], out_dim: int,
                 channels: Sequence[int], kernel_size: int, activation: str, dropout: float,
                 batch_norm: bool, init: str, init_gain: float | None,
                 activation_checkpointing: bool = False) -> None:
        super().__init__()
        name = f"model 'cnn{dims}d'"
        if len(input_shape) != dims + 1:
            want = "(channels, length)" if dims == 1 else "(channels, height, width)"
            raise UserError(f"{name} needs inputs shaped {want}; this data set gives samples "
                            f"of shape {tuple(input_shape)}. Use model=mlp, or a data set "
                            f"with {'sequences (mnist1d)' if dims == 1 else 'images (digits)'}.")
        check_range(name, "dropout", dropout, low=0, high=1, high_inclusive=False)
        check_range(name, "kernel_size", kernel_size, low=1)
        self.features = _conv_stack(dims, int(input_shape[0]), channels, int(kernel_size),
                                    activation, batch_norm, pool_every=1)
        self.avg = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.max = nn.AdaptiveMaxPool1d(1) if dims == 1 else nn.AdaptiveMaxPool2d(1)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(2 * int(channels[-1]), out_dim)
        self.activation_checkpointing = bool(activation_checkpointing)
        starts = [i for i, m in enumerate(self.features) if isinstance(m, (nn.Conv1d, nn.Conv2d))]
        self._blocks = list(zip(starts, [*starts[1:], len(self.features)], strict=True))
        apply_init(self, init, init_gain)

    def _features(self, x: Tensor) -> Tensor:
        """The conv stack; with activation checkpointing, one checkpoint per conv block
        (conv -> [norm] -> activation -> [pool]), only while training."""
        if not (self.activation_checkpointing and self.training and torch.is_grad_enabled()):
            return self.features(x)
        for a, b in self._blocks:
            block = self.features[a:b]
            x = checkpointed(block, x, block)
        return x

    def forward(self, x: Tensor) -> Tensor:
        h = self._features(x)
        pooled = torch.cat([self.avg(h).flatten(1), self.max(h).flatten(1)], dim=1)
        return self.head(self.drop(pooled))


def cnn1d(input_shape: Sequence[int], out_dim: int, channels: Sequence[int] = (32, 64, 64),
          kernel_size: int = 5, activation: str = "relu", dropout: float = 0.1,
          batch_norm: bool = True, init: str = "default", init_gain: float | None = None,
          activation_checkpointing: bool = False) -> CNN:
    """1D CNN for (channels, length) inputs such as MNIST-1D."""
    return CNN(1, input_shape, out_dim, channels, kernel_size, activation, dropout, batch_norm,
               init, init_gain, activation_checkpointing)


def cnn2d(input_shape: Sequence[int], out_dim: int, channels: Sequence[int] = (32, 64),
          kernel_size: int = 3, activation: str = "relu", dropout: float = 0.2,
          batch_norm: bool = True, init: str = "default", init_gain: float | None = None,
          activation_checkpointing: bool = False) -> CNN:
    """2D CNN for (channels, height, width) inputs such as 8x8 digits."""
    return CNN(2, input_shape, out_dim, channels, kernel_size, activation, dropout, batch_norm,
               init, init_gain, activation_checkpointing)
