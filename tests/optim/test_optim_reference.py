"""The readable reference optimizers reproduce torch.optim to 1e-6 over 100 float64 steps."""

import pytest
import torch
from torch import nn

from losslab.optim import OPTIMIZERS, build_param_groups
from losslab.optim import reference as ref

CASES = [
    ("sgd", ref.SGD, torch.optim.SGD, dict(lr=0.05)),
    ("sgd", ref.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1,
                                         weight_decay=1e-2)),
    ("sgd", ref.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True,
                                         weight_decay=1e-2)),
    ("rmsprop", ref.RMSprop, torch.optim.RMSprop, dict(lr=1e-3)),
    ("rmsprop", ref.RMSprop, torch.optim.RMSprop, dict(lr=1e-3, alpha=0.9, momentum=0.8,
                                                     centered=True, weight_decay=1e-2)),
    ("adam", ref.Adam, torch.optim.Adam, dict(lr=1e-2, weight_decay=1e-2)),
    ("adam", ref.Adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99), amsgrad=True)),
    ("adamw", ref.AdamW, torch.optim.AdamW, dict(lr=1e-2)),
    ("adamw", ref.AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 2)).double()


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 100) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 4, generator=gen, dtype=torch.float64)
        y = torch.randn(16, 2, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("name,ref_cls,torch_cls,kw", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_reference_matches_torch(name, ref_cls, torch_cls, kw):
    results = []
    for cls in (ref_cls, torch_cls):
        model = _model()
        # two groups (decay / no decay, different lr) so per-group options are exercised too
        groups = build_param_groups(model, weight_decay=kw.get("weight_decay", 0.0),
                                    lr_scales={"3.*": 2.0}, base_lr=kw["lr"])
        _train(model, cls(groups, **kw))
        results.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    ours, theirs = results
    assert not torch.equal(ours, torch.cat([p.detach().reshape(-1)
                                            for p in _model().parameters()]))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"])
def test_impl_reference_selects_reference_class(name):
    opt = OPTIMIZERS.build(name, _model().parameters(), impl="reference")
    assert type(opt).__module__ == "losslab.optim.reference"
    assert type(OPTIMIZERS.build(name, _model().parameters())).__module__.startswith("torch")


def test_reference_state_dict_roundtrip():
    model = _model()
    opt = ref.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, steps=3)
    opt2 = ref.Adam(model.parameters(), lr=1e-2)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[next(model.parameters())]["step"] == 3
