"""gradcheck: verdicts, a planted wrong backward, the loss catalog, non-differentiable points."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from losslab.builders import build
from losslab.diagnostics.functions import SiLUFunction, silu
from losslab.diagnostics.gradcheck import (
    LIKELY_BUG,
    NON_DIFFERENTIABLE,
    check_tensors,
    classify,
    format_table,
)
from losslab.diagnostics.gradcheck_targets import check_loss, check_model
from losslab.losses import LOSSES
from losslab.models import MODELS
from tests.conftest import ROOT


class WrongSiLU(torch.autograd.Function):
    """A planted bug: the backward forgets the product rule's x s (1 - s) term."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.sigmoid(x)


def loss_from_config(name: str) -> nn.Module:
    path = ROOT / "src" / "losslab" / "conf" / "loss" / f"{name}.yaml"
    return build(LOSSES, OmegaConf.load(path)) if path.is_file() else LOSSES.build(name)


def test_classify_thresholds() -> None:
    assert [classify(e) for e in (1e-9, 1e-6, 1e-4, 1e-2, float("nan"))] == \
        ["excellent", "good", "acceptable", LIKELY_BUG, LIKELY_BUG]


def test_planted_wrong_backward_is_a_likely_bug() -> None:
    x = torch.randn(10, dtype=torch.float64)
    good = check_tensors(lambda: silu(x).sum(), {"x": x})[0]
    bad = check_tensors(lambda: WrongSiLU.apply(x).sum(), {"x": x})[0]
    assert good.verdict == "excellent" and not good.failed
    assert bad.verdict == LIKELY_BUG and bad.failed and bad.rel_error > 1e-2
    assert not bad.kinks  # a wrong backward is not mistaken for a kink


def test_hand_written_silu_passes_torch_gradcheck() -> None:
    x = torch.randn(7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SiLUFunction.apply, (x,))
    assert torch.autograd.gradgradcheck(SiLUFunction.apply, (x,))
    assert torch.allclose(silu(x), nn.functional.silu(x))


def test_every_registered_loss_passes() -> None:
    names = LOSSES.names()
    assert "focal" in names and len(names) >= 15
    for name in names:
        checks = check_loss(loss_from_config(name), name)
        assert checks, name
        for c in checks:
            assert c.verdict in ("excellent", "good"), format_table([c])


@pytest.mark.parametrize(("name", "kinks"), [("mae", [0]), ("hinge", [0]), ("quantile", [0, 1, 2])])
def test_non_differentiable_points_are_reported(name: str, kinks: list[int]) -> None:
    checks = check_loss(loss_from_config(name), name)
    pred = [c for c in checks if c.name == "pred" and "binary" not in c.group]
    assert pred and all(c.kinks[: len(kinks)] == kinks for c in pred)
    assert all(c.verdict == "excellent" and "non-differentiable" in c.note for c in pred)
    assert not any(c.kinks for c in check_loss(loss_from_config("mse"), "mse"))


def test_relu_at_zero_is_non_differentiable() -> None:
    x = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    (c,) = check_tensors(lambda: torch.relu(x).sum(), {"x": x})
    assert c.kinks == [1] and c.checked == 2 and c.verdict == "excellent"
    zero = torch.zeros(1, dtype=torch.float64)
    (only,) = check_tensors(lambda: torch.relu(zero).sum(), {"x": zero})
    assert only.verdict == NON_DIFFERENTIABLE and not only.failed


def test_model_check_samples_elements_and_uses_eval_mode() -> None:
    torch.manual_seed(0)
    model = MODELS.build("mlp", input_shape=(1, 12), out_dim=3, hidden=[6, 5],
                         activation="gelu", dropout=0.5, batch_norm=True)
    model.train()
    x, y = torch.randn(4, 1, 12), torch.tensor([0, 1, 2, 1])
    checks = check_model(model, LOSSES.build("ce"), x, y, "mlp", max_elements=5)
    names = [c.name for c in checks]
    assert names[-1] == "input x" and "head.weight" in names
    assert all(c.checked <= 5 and c.verdict in ("excellent", "good") for c in checks)
    assert not model.training


def test_table_lists_each_tensor() -> None:
    x = torch.tensor([0.0, 1.0], dtype=torch.float64)
    table = format_table(check_tensors(lambda: x.abs().sum(), {"x": x}, group="abs"))
    assert "abs" in table and "non-differentiable at 1 point(s)" in table

