"""New MNIST-1D models (logistic regression, GRU) and activation checkpointing."""

from __future__ import annotations

import pytest
import torch

from losslab.errors import UserError
from losslab.models import MODELS
from losslab.tuning.memory import measure, saved_tensor_bytes


@pytest.mark.parametrize("name", ["linear", "logistic", "gru"])
def test_new_models_shapes(name):
    m = MODELS.build(name, input_shape=(1, 40), out_dim=10)
    assert m(torch.randn(7, 1, 40)).shape == (7, 10)


def test_linear_is_one_affine_map():
    m = MODELS.build("linear", input_shape=(1, 40), out_dim=10)
    assert sum(p.numel() for p in m.parameters()) == 40 * 10 + 10


def test_gru_unidirectional_and_bad_input():
    m = MODELS.build("gru", input_shape=(2, 30), out_dim=3, hidden=8, num_layers=2,
                     bidirectional=False)
    assert m(torch.randn(4, 2, 30)).shape == (4, 3)
    with pytest.raises(UserError, match="gru.*needs inputs shaped"):
        MODELS.build("gru", input_shape=(10,), out_dim=2)


def _grads_and_buffers(name: str, checkpointing: bool, **kwargs):
    torch.manual_seed(0)
    m = MODELS.build(name, input_shape=(1, 40), out_dim=10,
                     activation_checkpointing=checkpointing, **kwargs)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 1, 40, generator=g), torch.randint(0, 10, (32,), generator=g)
    torch.manual_seed(2)  # same dropout masks in both runs
    torch.nn.functional.cross_entropy(m(x), y).backward()
    return ({n: p.grad.clone() for n, p in m.named_parameters()},
            {n: b.clone() for n, b in m.named_buffers()})


@pytest.mark.parametrize("name,kwargs", [
    ("mlp", {"hidden": [64, 64, 64], "dropout": 0.3, "batch_norm": True}),
    ("cnn1d", {"channels": [8, 16, 16], "dropout": 0.2}),  # BatchNorm + pooling blocks
])
def test_activation_checkpointing_same_gradients_and_running_stats(name, kwargs):
    grads, buffers = _grads_and_buffers(name, False, **kwargs)
    grads_ck, buffers_ck = _grads_and_buffers(name, True, **kwargs)
    assert grads.keys() == grads_ck.keys() and buffers
    for k in grads:
        torch.testing.assert_close(grads_ck[k], grads[k], rtol=1e-6, atol=1e-6)
    for k in buffers:  # BatchNorm statistics updated once, not again by the recomputation
        torch.testing.assert_close(buffers_ck[k], buffers[k], rtol=1e-6, atol=1e-6)


def test_checkpointing_only_while_training():
    m = MODELS.build("mlp", input_shape=(1, 40), out_dim=10, hidden=[32, 32],
                     activation_checkpointing=True).eval()
    x = torch.randn(5, 1, 40)
    with torch.no_grad():
        assert m(x).shape == (5, 10)


def test_checkpointing_keeps_less_for_backward():
    """Saved activations: only each block's input is kept (measured, fresh models)."""
    def saved(ck: bool) -> int:
        torch.manual_seed(0)
        m = MODELS.build("mlp", input_shape=(1, 40), out_dim=10, hidden=[256] * 4,
                         dropout=0.1, activation_checkpointing=ck)
        return saved_tensor_bytes(m, torch.randn(512, 1, 40), torch.randint(0, 10, (512,)))

    plain, ck = saved(False), saved(True)
    assert ck < 0.5 * plain, (plain, ck)
    r = measure("mlp", checkpointing=True, batch=64, width=32, depth=2)
    assert r["saved_mb"] > 0 and r["peak_mb"] >= 0
