"""Every scheduler builds and steps; warmup_cosine has the documented shape."""

import math

import pytest
import torch
from torch import nn

from losslab.errors import UserError
from losslab.optim import OPTIMIZERS, SCHEDULERS
from losslab.optim.schedulers import warmup_cosine_factor

ALL = ["none", "step", "multistep", "exponential", "cosine", "warmup_cosine", "linear_warmup",
       "onecycle", "plateau"]


def _opt(lr=0.1):
    return OPTIMIZERS.build("sgd", nn.Linear(2, 1).parameters(), lr=lr, momentum=0.9)


def _lrs(opt, sched, steps):
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_catalog_is_complete():
    assert set(ALL) <= set(SCHEDULERS.names())


@pytest.mark.parametrize("name", ALL)
def test_scheduler_builds_and_steps(name):
    opt = _opt()
    sched = SCHEDULERS.build(name, opt, total_steps=20)
    if name == "none":
        assert sched is None
        return
    for i in range(20):
        opt.step()
        sched.step(1.0) if name == "plateau" else sched.step()
        lr = opt.param_groups[0]["lr"]
        assert 0 <= lr <= 0.1 + 1e-12 and math.isfinite(lr), (i, lr)


def test_decays_have_expected_values():
    opt = _opt()
    assert _lrs(opt, SCHEDULERS.build("step", opt, 10, step_size=2, gamma=0.5), 5) == \
        pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])
    opt = _opt()
    assert _lrs(opt, SCHEDULERS.build("multistep", opt, 10, milestones=[1, 3]), 4) == \
        pytest.approx([0.1, 0.01, 0.01, 0.001])
    opt = _opt()
    assert _lrs(opt, SCHEDULERS.build("exponential", opt, 10, gamma=0.5), 3) == \
        pytest.approx([0.1, 0.05, 0.025])
    opt = _opt()
    lrs = _lrs(opt, SCHEDULERS.build("cosine", opt, 10), 11)
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.05)
    assert lrs[10] == pytest.approx(0.0, abs=1e-12)


def test_warmup_cosine_shape():
    opt = _opt(lr=1.0)
    total, warm = 20, 4
    lrs = _lrs(opt, SCHEDULERS.build("warmup_cosine", opt, total, warmup_steps=warm,
                                     min_lr_ratio=0.1), total + 1)
    # linear warm-up (t + 1) / (W + 1), strictly increasing to the peak at t = W
    assert lrs[:warm + 1] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    # then cosine from 1 down to min_lr_ratio at t = T
    for t in range(warm, total + 1):
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))
        assert lrs[t] == pytest.approx(expected)
    assert lrs[warm + (total - warm) // 2] == pytest.approx(0.55)
    assert lrs[total] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1:], strict=False))
    # warmup_fraction is a fraction of total steps
    assert warmup_cosine_factor(9, 100, 10) < 1.0 == warmup_cosine_factor(10, 100, 10)
    opt = _opt(lr=1.0)
    lrs = _lrs(opt, SCHEDULERS.build("warmup_cosine", opt, 100, warmup_fraction=0.1), 12)
    assert lrs[9] < lrs[10] == pytest.approx(1.0)


def test_linear_warmup_then_constant():
    opt = _opt(lr=1.0)
    lrs = _lrs(opt, SCHEDULERS.build("linear_warmup", opt, 10, warmup_steps=3), 6)
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_onecycle_peaks_at_max_lr():
    opt = _opt()
    lrs = _lrs(opt, SCHEDULERS.build("onecycle", opt, 10, max_lr=1.0, pct_start=0.3), 10)
    assert max(lrs) == pytest.approx(1.0) and lrs[0] == pytest.approx(1.0 / 25)


def test_plateau_reduces_after_patience():
    opt = _opt()
    sched = SCHEDULERS.build("plateau", opt, 10, patience=1, factor=0.5)
    for _ in range(3):
        sched.step(1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


@pytest.mark.parametrize("name,kw,key", [
    ("step", {"gamma": 0.0}, "gamma"),
    ("exponential", {"gamma": 1.5}, "gamma"),
    ("onecycle", {"pct_start": 1.0}, "pct_start"),
    ("warmup_cosine", {"warmup_fraction": 1.0}, "warmup_fraction"),
    ("warmup_cosine", {"warmup_steps": 50}, "warmup_steps"),
    ("linear_warmup", {"warmup_steps": -1}, "warmup_steps"),
    ("multistep", {"milestones": [5, 2]}, "milestones"),
    ("plateau", {"mode": "minimum"}, "mode"),
])
def test_bad_scheduler_params(name, kw, key):
    with pytest.raises(UserError) as err:
        SCHEDULERS.build(name, _opt(), total_steps=20, **kw)
    assert f"'{key}'" in str(err.value)


def test_unknown_scheduler_did_you_mean():
    with pytest.raises(UserError, match="Did you mean 'cosine'"):
        SCHEDULERS.build("cosin", _opt(), total_steps=10)
    with pytest.raises(UserError, match="both"):
        SCHEDULERS.build("warmup_cosine", _opt(), 10, warmup_steps=1, warmup_fraction=0.1)


def test_lambda_schedulers_checkpoint():
    opt = _opt()
    sched = SCHEDULERS.build("warmup_cosine", opt, 10, warmup_steps=2)
    _lrs(opt, sched, 3)
    sd = sched.state_dict()
    torch.save(sd, "/dev/null")
    assert sd["last_epoch"] == 3
