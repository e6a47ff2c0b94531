"""build_param_groups: no decay for biases/norms, lr scales by glob, frozen params left out."""

import pytest
import torch
from torch import nn

from losslab.errors import UserError
from losslab.optim import OPTIMIZERS, SCHEDULERS, build_param_groups, describe_param_groups


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 4))
        self.ln = nn.LayerNorm(4)
        self.scale = nn.Parameter(torch.ones(4, 4))  # 2-D, not a norm: decays
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def _by_name(groups):
    return {n: g for g in groups for n in g["param_names"]}


def test_bias_and_norm_params_get_no_decay():
    groups = build_param_groups(Net(), weight_decay=0.1)
    wd = {n: g["weight_decay"] for n, g in _by_name(groups).items()}
    assert wd["body.0.weight"] == wd["body.3.weight"] == wd["head.weight"] == 0.1
    assert wd["scale"] == 0.1
    for name in ("body.0.bias", "body.1.weight", "body.1.bias", "ln.weight", "ln.bias",
                 "head.bias"):
        assert wd[name] == 0.0, name


def test_norm_detected_by_module_type_even_with_2d_weight_and_neutral_name():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.gn = nn.GroupNorm(1, 3)

    groups = build_param_groups(Odd(), weight_decay=0.1, no_decay=())
    wd = {n: g["weight_decay"] for n, g in _by_name(groups).items()}
    assert wd == {"lin.weight": 0.1, "lin.bias": 0.0, "gn.weight": 0.0, "gn.bias": 0.0}


def test_no_decay_patterns_glob_and_substring():
    groups = build_param_groups(Net(), weight_decay=0.1, no_decay=("head.*", "scale"))
    wd = {n: g["weight_decay"] for n, g in _by_name(groups).items()}
    assert wd["head.weight"] == 0.0 and wd["scale"] == 0.0 and wd["body.0.weight"] == 0.1


def test_frozen_params_left_out_and_each_param_once():
    model = Net()
    groups = build_param_groups(model, weight_decay=0.1, lr_scales={"head.*": 10.0})
    names = [n for g in groups for n in g["param_names"]]
    assert not any(n.startswith("frozen") for n in names)
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert len(groups) == 4  # {decay, no decay} x {scale 1, scale 10}


def test_lr_scales_applied_to_group_lr_and_survive_schedulers():
    groups = build_param_groups(Net(), weight_decay=0.0, lr_scales={"head.*": 10.0}, base_lr=1e-3)
    by = _by_name(groups)
    assert by["head.weight"]["lr"] == pytest.approx(1e-2)
    assert by["body.0.weight"]["lr"] == pytest.approx(1e-3)
    opt = OPTIMIZERS.build("adam", groups, lr=1e-3)
    lrs = {g["lr_scale"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({1.0: 1e-3, 10.0: 1e-2})
    sched = SCHEDULERS.build("cosine", opt, total_steps=10)
    for _ in range(5):
        opt.step()
        sched.step()
    lrs = {g["lr_scale"]: g["lr"] for g in opt.param_groups}
    assert lrs[10.0] == pytest.approx(10 * lrs[1.0])


def test_lr_scale_without_base_lr_filled_in_by_the_factory():
    groups = build_param_groups(Net(), lr_scales={"head.*": 0.5})
    assert all("lr" not in g for g in groups)
    opt = OPTIMIZERS.build("sgd", groups, lr=0.2)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([0.1, 0.2])


def test_onecycle_max_lr_is_per_group():
    groups = build_param_groups(Net(), weight_decay=0.0, lr_scales={"head.*": 10.0}, base_lr=1e-3)
    opt = OPTIMIZERS.build("sgd", groups, lr=1e-3, momentum=0.9)
    sched = SCHEDULERS.build("onecycle", opt, total_steps=10, max_lr=0.1, pct_start=0.5)
    assert sorted(g["max_lr"] for g in opt.param_groups) == pytest.approx([0.1, 1.0])
    for _ in range(5):
        opt.step()
        sched.step()
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs[1] == pytest.approx(10 * lrs[0])


def test_lr_scales_glob_that_matches_nothing_is_an_error():
    with pytest.raises(UserError, match="matches no parameter.*head"):
        build_param_groups(Net(), lr_scales={"haed.*": 10.0})
    with pytest.raises(UserError, match=r"lr_scales\['head.\*'\]"):
        build_param_groups(Net(), lr_scales={"head.*": 0.0})


def test_negative_weight_decay_and_no_trainable_params():
    with pytest.raises(UserError, match="weight_decay"):
        build_param_groups(Net(), weight_decay=-1)
    with pytest.raises(UserError, match="no trainable"):
        build_param_groups(nn.Linear(2, 2).requires_grad_(False))


def test_describe_param_groups():
    groups = build_param_groups(Net(), weight_decay=0.1, lr_scales={"head.*": 10.0}, base_lr=1e-3)
    text = describe_param_groups(groups)
    n = sum(p.numel() for g in groups for p in g["params"])
    assert f"{n:,} trainable params" in text
    assert text.count("group ") == len(groups)
    assert "weight_decay=0.1" in text and "scale 10" in text and "head.weight" in text
    # an optimizer's own param_groups describe too
    assert "group 0" in describe_param_groups(OPTIMIZERS.build("adam", groups).param_groups)
