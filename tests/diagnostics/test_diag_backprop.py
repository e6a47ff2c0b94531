"""Backprop by hand equals autograd to 1e-10 in float64."""

from __future__ import annotations

import pytest
import torch

from losslab.diagnostics.backprop import DERIVATIVES, mlp_gradients
from losslab.errors import UserError
from losslab.models import ACTIVATIONS, MODELS


def autograd_gradients(model, x, y, loss: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out = model(x)
    if loss == "mse":
        value = torch.nn.functional.mse_loss(out.squeeze(-1), y)
    else:
        value = torch.nn.functional.cross_entropy(out, y)
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(value, list(model.parameters()))
    return value, dict(zip(names, grads, strict=True))


def test_every_registered_activation_has_a_derivative() -> None:
    assert set(ACTIVATIONS.names()) <= set(DERIVATIVES)


@pytest.mark.parametrize("activation", sorted(DERIVATIVES))
@pytest.mark.parametrize(("hidden", "loss"), [([], "ce"), ([7], "mse"), ([6, 5, 4], "ce"),
                                              ([5] * 6, "mse")])
def test_hand_backprop_matches_autograd(activation: str, hidden: list[int], loss: str) -> None:
    torch.manual_seed(len(hidden))
    out_dim = 1 if loss == "mse" else 3
    model = MODELS.build("mlp", input_shape=(2, 4), out_dim=out_dim, hidden=hidden,
                         activation=activation, dropout=0.3).double().eval()
    x = torch.randn(9, 2, 4, dtype=torch.float64)
    y = torch.randn(9, dtype=torch.float64) if loss == "mse" else torch.randint(0, 3, (9,))
    value, grads = mlp_gradients(model, x, y, loss)
    expected_value, expected = autograd_gradients(model, x, y, loss)
    assert abs(float(value - expected_value.detach())) < 1e-10
    assert grads.keys() == expected.keys()
    for name, g in grads.items():
        assert torch.allclose(g, expected[name], rtol=0, atol=1e-10), name


def test_unsupported_models_and_losses_are_user_errors() -> None:
    bn = MODELS.build("mlp", input_shape=(3,), out_dim=2, hidden=[4], batch_norm=True)
    with pytest.raises(UserError, match="batch_norm"):
        mlp_gradients(bn, torch.randn(2, 3), torch.tensor([0, 1]), "ce")
    plain = MODELS.build("mlp", input_shape=(3,), out_dim=2, hidden=[4])
    with pytest.raises(UserError, match="'loss' must be one of mse, ce"):
        mlp_gradients(plain, torch.randn(2, 3), torch.tensor([0, 1]), "hinge")
