import pytest
import torch

from losslab.errors import UserError
from losslab.models import ACTIVATIONS, INITS, MODELS


def test_mlp_shapes_depth_width_and_residual():
    m = MODELS.build("mlp", input_shape=(1, 40), out_dim=10, hidden=None, depth=4, width=32,
                     activation="silu", batch_norm=True, dropout=0.1, residual=True)
    assert m(torch.randn(5, 1, 40)).shape == (5, 10)
    assert len(m.blocks) == 4 and m.blocks[1].residual and not m.blocks[0].residual


@pytest.mark.parametrize("name,shape", [("cnn1d", (1, 40)), ("cnn2d", (1, 8, 8))])
def test_cnns(name, shape):
    m = MODELS.build(name, input_shape=shape, out_dim=10)
    assert m(torch.randn(3, *shape)).shape == (3, 10)


def test_cnn_on_vectors_is_a_user_error():
    with pytest.raises(UserError, match="cnn1d.*needs inputs shaped"):
        MODELS.build("cnn1d", input_shape=(10,), out_dim=1)


def test_activation_registry():
    for name in ["relu", "leaky_relu", "elu", "gelu", "silu", "swish", "sigmoid", "tanh"]:
        assert isinstance(ACTIVATIONS.build(name), torch.nn.Module)


@pytest.mark.parametrize("init,expected_var", [
    ("he_normal", lambda fi, fo: 2 / fi), ("xavier_normal", lambda fi, fo: 2 / (fi + fo)),
    ("xavier_uniform", lambda fi, fo: 2 / (fi + fo)), ("he_uniform", lambda fi, fo: 2 / fi)])
def test_init_variances(init, expected_var):
    torch.manual_seed(0)
    m = MODELS.build("mlp", input_shape=(400,), out_dim=10, hidden=[300], init=init)
    w = m.blocks[0].linear.weight
    assert w.var().item() == pytest.approx(expected_var(400, 300), rel=0.05)
    assert torch.count_nonzero(m.blocks[0].linear.bias) == 0


def test_normal_orthogonal_zeros_inits():
    m = MODELS.build("mlp", input_shape=(50,), out_dim=3, hidden=[50], init="normal", init_gain=0.5)
    assert m.blocks[0].linear.weight.std().item() == pytest.approx(0.5, rel=0.05)
    m = MODELS.build("mlp", input_shape=(50,), out_dim=3, hidden=[50], init="orthogonal")
    w = m.blocks[0].linear.weight
    assert torch.allclose(w @ w.T, torch.eye(50), atol=1e-4)
    m = MODELS.build("mlp", input_shape=(50,), out_dim=3, hidden=[50], init="zeros")
    assert torch.count_nonzero(m.blocks[0].linear.weight) == 0
    assert "he_normal" in INITS.names()
