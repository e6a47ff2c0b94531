"""Curriculum / sample weighting: weights per strategy on known losses (hand-computed), SuperLoss
against its closed form, pacing functions, normalisation, warmup, EMA difficulty, errors."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from scipy.special import lambertw

from losslab.callbacks.curriculum import (
    Curriculum,
    keep_threshold,
    lambert_w,
    pacing_fraction,
    self_paced_weights,
    superloss_sigma,
    superloss_value,
)
from losslab.cli import check_overrides
from losslab.errors import UserError

IDX = torch.arange(4)
LOSS = torch.tensor([0.5, 1.0, 2.0, 4.0])


def cb(**kw) -> Curriculum:
    return Curriculum(**kw)


# -- self-paced ---------------------------------------------------------------------------
def test_self_paced_weights_hand_computed():
    assert self_paced_weights(LOSS, 2.0).tolist() == [1, 1, 0, 0]
    assert self_paced_weights(LOSS, 2.0, linear=True).tolist() == [0.75, 0.5, 0, 0]


def test_self_paced_callback_normalises_and_grows_lambda():
    c = cb(strategy="self_paced_hard", lam=2.0, lam_growth=1.5, normalize=False)
    assert c.weights(IDX, LOSS).tolist() == [1, 1, 0, 0]
    c = cb(strategy="self_paced_hard", lam=2.0, lam_growth=1.5)
    assert c.weights(IDX, LOSS).tolist() == [2, 2, 0, 0]  # w / mean(w), mean = 1/2
    assert c.last["active_fraction"].item() == 0.5 and c.last["threshold"].item() == 2.0
    c.curriculum_epoch = 1  # lam = 2 * 1.5 = 3
    assert c.weights(IDX, LOSS).tolist() == pytest.approx([4 / 3, 4 / 3, 4 / 3, 0])
    lin = cb(strategy="self_paced_linear", lam=2.0)  # [0.75, 0.5, 0, 0] / 0.3125
    assert lin.weights(IDX, LOSS).tolist() == pytest.approx([2.4, 1.6, 0, 0])


def test_self_paced_lambda_from_init_fraction_quantile():
    c = cb(strategy="self_paced_hard", init_fraction=0.5)
    c.weights(IDX, LOSS)
    assert c.lam0.item() == pytest.approx(torch.quantile(LOSS, 0.5).item())  # 1.5
    c.weights(IDX, LOSS * 10)  # lam0 is fixed after the first curriculum batch
    assert c.lam0.item() == pytest.approx(1.5)


def test_normalisation_keeps_mean_one_and_guards_all_zero():
    w = cb(strategy="self_paced_linear", lam=3.0).weights(IDX, LOSS)
    assert w.mean().item() == pytest.approx(1.0)
    zero = cb(strategy="self_paced_hard", lam=0.1).weights(IDX, LOSS)
    assert zero.tolist() == [0, 0, 0, 0] and torch.isfinite(zero).all()


# -- pacing -------------------------------------------------------------------------------
@pytest.mark.parametrize("fn,t,expected", [
    ("linear", 0.0, 0.2), ("linear", 0.4, 0.6), ("linear", 0.8, 1.0), ("linear", 1.0, 1.0),
    ("root", 0.4, math.sqrt(0.04 + 0.96 * 0.5)), ("geometric", 0.4, 0.2 * 5 ** 0.5),
    ("geometric", 0.0, 0.2), ("step", 0.24, 0.4), ("step", 0.4, 0.6), ("step", 0.79, 0.8),
])
def test_pacing_functions(fn, t, expected):
    assert pacing_fraction(t, fn, start=0.2, end=1.0, full_at=0.8, steps=4) == \
        pytest.approx(expected)


def test_pacing_keeps_easiest_and_anti_hardest_fraction():
    d = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0])
    assert keep_threshold(d, 0.4).item() == 2.0 and keep_threshold(d, 0.4, True).item() == 4.0
    easy = cb(strategy="pacing", start_fraction=0.4, normalize=False)
    assert easy.weights(torch.arange(5), d).tolist() == [0, 1, 0, 1, 0]
    hard = cb(strategy="anti", start_fraction=0.4)
    assert hard.weights(torch.arange(5), d).tolist() == [2.5, 0, 0, 0, 2.5]
    easy.progress = 1.0  # p = end_fraction = 1: every sample
    assert easy.weights(torch.arange(5), d).tolist() == [1] * 5


# -- SuperLoss ----------------------------------------------------------------------------
def test_lambert_w_inverts_x_exp_x_and_matches_scipy():
    x = torch.cat([torch.tensor([-1 / math.e, -0.36, -0.2, 0.0, 0.5, 2.9, 3.0, 1e3, 1e6],
                                dtype=torch.float64),
                   torch.linspace(-0.36, 40.0, 500, dtype=torch.float64)])
    w = lambert_w(x)
    assert torch.allclose(w * torch.exp(w), x, rtol=1e-9, atol=1e-10)
    assert w[0].item() == -1.0  # the branch point W(-1/e) = -1
    ref = torch.from_numpy(lambertw(x[1:].numpy()).real)
    assert torch.allclose(w[1:], ref, rtol=1e-7, atol=1e-7)


def test_superloss_sigma_is_the_closed_form_minimiser():
    loss, tau, lam = torch.tensor([0.7, 0.9, 1.0, 2.0, 5.0, 20.0]), 1.0, 0.5
    sigma = superloss_sigma(loss, tau, lam)
    beta = (loss - tau) / lam
    expected = torch.exp(-torch.from_numpy(
        lambertw(0.5 * torch.clamp(beta, min=-2 / math.e).numpy()).real)).float()
    assert torch.allclose(sigma, expected, rtol=1e-5)
    assert superloss_sigma(torch.tensor([1.0]), 1.0, lam).item() == pytest.approx(1.0)  # W(0)=0
    # beta / 2 below -1/e is clamped there: W(-1/e) = -1, sigma = e
    assert superloss_sigma(torch.tensor([0.0, 0.5]), 1.0, lam).tolist() == \
        pytest.approx([math.e, math.e])
    # sigma* minimises (l - tau) s + lam (log s)^2: the derivative vanishes there ...
    assert torch.allclose(loss - tau + 2 * lam * torch.log(sigma) / sigma, torch.zeros(6),
                          atol=1e-4)
    for eps in (0.99, 1.01):  # ... and it is a minimum
        assert (superloss_value(loss, tau, lam, sigma * eps)
                >= superloss_value(loss, tau, lam, sigma)).all()


def test_superloss_callback_weights_and_running_tau():
    c = cb(strategy="superloss", superloss_lam=1.0, tau_decay=0.9, normalize=False)
    w = c.weights(IDX, LOSS)
    tau1 = LOSS.mean()  # first batch: tau = its mean
    assert torch.allclose(w, superloss_sigma(LOSS, tau1, 1.0))
    assert w[0] > 1 > w[3]  # easy samples up, hard down
    c.weights(IDX, 2 * LOSS)
    assert c.tau.item() == pytest.approx(0.9 * tau1.item() + 0.1 * 2 * tau1.item())
    fixed = cb(strategy="superloss", superloss_tau=math.log(10), superloss_lam=0.5)
    s = superloss_sigma(LOSS, math.log(10), 0.5)
    assert torch.allclose(fixed.weights(IDX, LOSS), s / s.mean())
    assert fixed.last["threshold"].item() == pytest.approx(math.log(10))


# -- warmup and EMA difficulty -------------------------------------------------------------
def test_warmup_gives_plain_weights_but_tracks_difficulty():
    c = cb(strategy="self_paced_hard", lam=1.0, difficulty="ema", ema_decay=0.5)
    c.num_samples = 4
    c.in_warmup = True
    assert c.weights(IDX, LOSS).tolist() == [1, 1, 1, 1]
    assert c.ema.tolist() == LOSS.tolist() and c.lam0 is None
    c.in_warmup = False
    assert c.weights(IDX, LOSS).tolist() == [4, 0, 0, 0]


def test_ema_difficulty_per_sample_index():
    c = cb(strategy="self_paced_hard", lam=2.6, difficulty="ema", ema_decay=0.5,
           normalize=False)
    c.num_samples = 4
    c.weights(torch.tensor([0, 1]), torch.tensor([2.0, 4.0]))  # first sight: e = l
    w = c.weights(torch.tensor([0, 2]), torch.tensor([4.0, 1.0]))
    assert c.ema[:3].tolist() == [3.0, 4.0, 1.0] and math.isnan(c.ema[3].item())
    assert w.tolist() == [0, 1]  # e_0 = 0.5*2 + 0.5*4 = 3 > 2.6, although 4 alone says so too
    w = c.weights(torch.tensor([1]), torch.tensor([0.0]))  # e_1 = 2 < 2.6: in, on its average
    assert w.tolist() == [1] and c.ema[1].item() == 2.0


# -- errors -------------------------------------------------------------------------------
def test_errors_name_the_key_and_suggest():
    with pytest.raises(UserError, match=r"strategy.*Did you mean 'superloss'"):
        cb(strategy="superlos")
    with pytest.raises(UserError, match=r"Did you mean 'self_paced_hard'"):
        cb(strategy="self_paced_hrd")
    with pytest.raises(UserError, match="'lam' must be in"):
        cb(strategy="self_paced_hard", lam=0.0)
    with pytest.raises(UserError, match="'superloss_lam'"):
        cb(strategy="superloss", superloss_lam=-1.0)
    for key in ("start_fraction", "end_fraction", "init_fraction", "full_at"):
        for bad in (0.0, 1.5):
            with pytest.raises(UserError, match=f"'{key}' must be in \\(0, 1\\]"):
                cb(**{key: bad})
    with pytest.raises(UserError, match=r"Did you mean 'geometric'"):
        cb(pacing="geometrc")
    with pytest.raises(UserError, match=r"Unknown curriculum 'superlos'.*'superloss'"):
        check_overrides(["curriculum=none,superlos"])


def test_losses_without_per_sample_values_are_rejected():
    trainer = SimpleNamespace(datamodule=None)
    mean_loss = SimpleNamespace(sample_weight_fn=None, loss_fn=torch.nn.CrossEntropyLoss())
    with pytest.raises(UserError, match="does not return per-sample values"):
        cb(strategy="pacing").setup(trainer, mean_loss, "fit")
    with pytest.raises(UserError, match="no 'sample_weight_fn'"):
        cb(strategy="pacing").setup(trainer, SimpleNamespace(), "fit")
    cb(strategy="none").setup(trainer, SimpleNamespace(), "fit")  # none asks for nothing
    with pytest.raises(UserError, match=r"one loss per sample.*\(4, 1\)"):
        cb(strategy="pacing").weights(IDX, LOSS[:, None])
