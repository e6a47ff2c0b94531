"""Backpropagation by hand for an MLP: the layer equations, no autograd.

Row-vector (batch) form, N samples, layers l = 1..L, a^0 = x:

    z^l = a^{l-1} W^l^T + b^l          a^l = f(z^l)  (l < L),   output z^L (no activation)
    delta^L = dL/dz^L                   (mse: 2 (z^L - y) / N;  ce: (softmax(z^L) - onehot(y)) / N)
    delta^l = (delta^{l+1} W^{l+1}) * f'(z^l)
    dL/dW^l = delta^l^T a^{l-1}         dL/db^l = sum_n delta^l_n

(the column-vector form of the lessons, delta^l = (W^{l+1})^T delta^{l+1} * f'(z^l) and
dL/dW^l = delta^l a^{l-1}^T, summed over the batch). Activations are the registry's (`f` is its
module); their derivatives f' are written out below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from losslab.errors import UserError
from losslab.models.activations import ACTIVATIONS


def _gelu_prime(z: Tensor, module: nn.Module) -> Tensor:
    """GELU(z) = z Phi(z): f' = Phi(z) + z phi(z) (exact, erf form)."""
    if getattr(module, "approximate", "none") != "none":
        raise UserError("backprop: activation 'gelu' with approximate='tanh' is not supported; "
                        "use the exact (erf) GELU the registry builds.")
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return cdf + z * pdf


def _silu_prime(z: Tensor, module: nn.Module) -> Tensor:
    """SiLU(z) = z s(z), s = sigmoid: f' = s (1 + z (1 - s))."""
    s = torch.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


def _elu_prime(z: Tensor, module: nn.Module) -> Tensor:
    """ELU: f' = 1 (z > 0), alpha e^z (z <= 0)."""
    alpha = float(getattr(module, "alpha", 1.0))
    return torch.where(z > 0, torch.ones_like(z), alpha * torch.exp(z))


def _leaky_prime(z: Tensor, module: nn.Module) -> Tensor:
    """LeakyReLU: f' = 1 (z > 0), slope (z <= 0)."""
    slope = float(getattr(module, "negative_slope", 0.01))
    return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, slope))


DERIVATIVES: dict[str, Callable[[Tensor, nn.Module], Tensor]] = {
    "relu": lambda z, m: (z > 0).to(z.dtype),          # torch's subgradient at 0 is 0
    "leaky_relu": _leaky_prime,
    "elu": _elu_prime,
    "gelu": _gelu_prime,
    "silu": _silu_prime,
    "sigmoid": lambda z, m: torch.sigmoid(z) * (1.0 - torch.sigmoid(z)),
    "tanh": lambda z, m: 1.0 - torch.tanh(z) ** 2,
    "identity": lambda z, m: torch.ones_like(z),
}
LOSS_NAMES = ("mse", "ce")


@dataclass
class Cache:
    """What the forward pass keeps for the backward pass."""

    inputs: list[Tensor]   # a^{l-1} for each layer l
    pre: list[Tensor]      # z^l for each layer l
    output: Tensor         # z^L


def forward(weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor,
            activation: str) -> Cache:
    """z^l = a^{l-1} W^l^T + b^l, a^l = f(z^l) for hidden layers; the last layer is linear."""
    act = ACTIVATIONS.build(activation)
    a, inputs, pre = x.reshape(x.shape[0], -1), [], []
    with torch.no_grad():
        for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
            inputs.append(a)
            z = a @ w.T + b
            pre.append(z)
            a = act(z) if i < len(weights) - 1 else z
    return Cache(inputs, pre, a)


def loss_and_output_delta(output: Tensor, y: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """(L, delta^L) for the mean loss over the batch.

    mse: L = mean_n (z_n - y_n)^2 (one output),  delta^L = 2 (z - y) / N
    ce:  L = mean_n -log softmax(z_n)_{y_n},      delta^L = (softmax(z) - onehot(y)) / N
    """
    n = output.shape[0]
    if loss == "mse":
        r = output.reshape(n) - y.reshape(n).to(output.dtype)
        return (r * r).mean(), (2.0 * r / n).reshape(output.shape)
    if loss == "ce":
        shifted = output - output.max(dim=1, keepdim=True).values
        log_p = shifted - torch.log(torch.exp(shifted).sum(dim=1, keepdim=True))
        onehot = torch.zeros_like(output)
        onehot[torch.arange(n), y.long()] = 1.0
        return -(log_p * onehot).sum() / n, (torch.exp(log_p) - onehot) / n
    raise UserError(f"backprop: 'loss' must be one of {', '.join(LOSS_NAMES)}, got {loss!r}.")


def backward(weights: Sequence[Tensor], cache: Cache, delta: Tensor,
             activation: str) -> tuple[list[Tensor], list[Tensor]]:
    """(dL/dW^l, dL/db^l) for every layer from delta^L, by the recursion of the docstring."""
    act = ACTIVATIONS.build(activation)
    prime = DERIVATIVES[ACTIVATIONS.canonical(activation)]
    grads_w: list[Tensor] = [torch.empty(0)] * len(weights)
    grads_b: list[Tensor] = [torch.empty(0)] * len(weights)
    for layer in range(len(weights) - 1, -1, -1):
        grads_w[layer] = delta.T @ cache.inputs[layer]
        grads_b[layer] = delta.sum(dim=0)
        if layer > 0:
            delta = (delta @ weights[layer]) * prime(cache.pre[layer - 1], act)
    return grads_w, grads_b


def linear_layers(model: nn.Module) -> tuple[list[nn.Linear], str]:
    """The Linear layers of a losslab MLP (in order) and its activation's registry name."""
    blocks = list(getattr(model, "blocks", []))
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise UserError("backprop: expects a losslab MLP (model=mlp) with a Linear head.")
    names = set()
    for block in blocks:
        if not isinstance(block.norm, nn.Identity) or getattr(block, "residual", False):
            raise UserError("backprop: batch_norm and residual MLPs are not covered by the "
                            "hand-written equations; use model.batch_norm=false "
                            "model.residual=false.")
        names.add(type(block.act))
    if len(names) > 1:
        raise UserError("backprop: all hidden layers must share one activation.")
    activation = "identity"
    if blocks:
        cls = type(blocks[0].act)
        activation = next(n for n in ACTIVATIONS.names() if ACTIVATIONS.get(n) is cls)
    return [b.linear for b in blocks] + [head], activation


def mlp_gradients(model: nn.Module, x: Tensor, y: Tensor, loss: str) -> tuple[Tensor,
                                                                              dict[str, Tensor]]:
    """(L, {parameter name: dL/dparameter}) for a losslab MLP, computed by hand.

    Dropout is ignored (eval-mode network); names match `model.named_parameters()`.
    """
    layers, activation = linear_layers(model)
    weights = [layer.weight.detach() for layer in layers]
    biases = [layer.bias.detach() for layer in layers]
    cache = forward(weights, biases, x, activation)
    value, delta = loss_and_output_delta(cache.output, y, loss)
    grads_w, grads_b = backward(weights, cache, delta, activation)
    by_layer = {id(layer): i for i, layer in enumerate(layers)}
    grads: dict[str, Tensor] = {}
    for name, module in model.named_modules():
        if id(module) in by_layer:
            i = by_layer[id(module)]
            grads[f"{name}.weight"], grads[f"{name}.bias"] = grads_w[i], grads_b[i]
    return value, grads
