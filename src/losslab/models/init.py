"""Weight-initialisation registry. Each entry fills a weight tensor in place; biases are zeroed.

Variance-preserving rules for a layer with fan_in n_in and fan_out n_out:
xavier (Glorot & Bengio 2010): Var(w) = 2 / (n_in + n_out) (tanh/sigmoid);
he / kaiming (He et al. 2015): Var(w) = 2 / n_in (ReLU family).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from losslab.errors import check_range
from losslab.registry import Registry

INITS: Registry[Callable[[Tensor], None]] = Registry("init")


@INITS.register("default", aliases=("torch",))
def default(gain: float | None = None) -> Callable[[Tensor], None] | None:
    """Keep PyTorch's default (Kaiming-uniform with a=sqrt(5))."""
    return None


@INITS.register("xavier_uniform", aliases=("glorot_uniform",))
def xavier_uniform(gain: float | None = None) -> Callable[[Tensor], None]:
    """U(-a, a), a = gain * sqrt(6 / (n_in + n_out))."""
    return lambda w: nn.init.xavier_uniform_(w, gain=1.0 if gain is None else gain)


@INITS.register("xavier_normal", aliases=("glorot_normal",))
def xavier_normal(gain: float | None = None) -> Callable[[Tensor], None]:
    """N(0, gain^2 * 2 / (n_in + n_out))."""
    return lambda w: nn.init.xavier_normal_(w, gain=1.0 if gain is None else gain)


@INITS.register("he_uniform", aliases=("kaiming_uniform",))
def he_uniform(gain: float | None = None) -> Callable[[Tensor], None]:
    """U(-a, a), a = sqrt(6 / n_in) (ReLU)."""
    return lambda w: nn.init.kaiming_uniform_(w, nonlinearity="relu")


@INITS.register("he_normal", aliases=("kaiming_normal",))
def he_normal(gain: float | None = None) -> Callable[[Tensor], None]:
    """N(0, 2 / n_in) (ReLU)."""
    return lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu")


@INITS.register("orthogonal")
def orthogonal(gain: float | None = None) -> Callable[[Tensor], None]:
    """A (semi-)orthogonal matrix scaled by gain (Saxe et al. 2014)."""
    return lambda w: nn.init.orthogonal_(w, gain=1.0 if gain is None else gain)


@INITS.register("normal")
def normal(gain: float | None = None) -> Callable[[Tensor], None]:
    """N(0, std^2) with std = gain (default 0.01): small std makes deep nets vanish."""
    std = 0.01 if gain is None else gain
    check_range("init 'normal'", "init_gain (std)", std, low=0, low_inclusive=False)
    return lambda w: nn.init.normal_(w, 0.0, std)


@INITS.register("zeros")
def zeros(gain: float | None = None) -> Callable[[Tensor], None]:
    """All zeros: every unit in a layer gets the same gradient (symmetry is never broken)."""
    return nn.init.zeros_


def apply_init(model: nn.Module, name: str, gain: float | None = None) -> None:
    """Initialise every Linear/Conv weight of `model` with INITS[name]; zero their biases."""
    fill = INITS.build(name, gain=gain)
    if fill is None:
        return
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                fill(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
