"""Every clipping mode against a hand computation, the clip-fraction window, config errors,
and clipping inside a real run (through SupervisedTask.configure_gradient_clipping)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from losslab.callbacks.clipping import GradientClipper, unitwise_norm
from losslab.errors import UserError
from losslab.run import train


def make_net(seed: int = 0, scale: float = 1.0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(32, 6)
    (net(x).pow(2).sum() * scale).backward()
    return net


def grads(net: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in net.parameters()]


def test_norm_mode_is_global_l2_clipping() -> None:
    net = make_net(scale=10.0)
    g = grads(net)
    total = math.sqrt(sum(float(x.pow(2).sum()) for x in g))
    assert total > 1.0
    clipper = GradientClipper("norm", max_norm=1.0)
    clipper.measure_after = True
    clipper.clip(net)
    coef = 1.0 / (total + 1e-6)
    for before, p in zip(g, net.parameters(), strict=True):
        torch.testing.assert_close(p.grad, before * coef)
    reference = make_net(scale=10.0)
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
    for a, b in zip(net.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    values = clipper.window()
    assert values["grad/clip_fraction"] == 1.0
    assert values["grad/norm_total_before_clip"] == pytest.approx(total, rel=1e-5)
    assert values["grad/norm_total_after_clip"] == pytest.approx(1.0, rel=1e-5)


def test_norm_mode_leaves_small_gradients_alone() -> None:
    net = make_net(scale=1e-4)
    g = grads(net)
    clipper = GradientClipper("norm", max_norm=1.0)
    clipper.clip(net)
    for before, p in zip(g, net.parameters(), strict=True):
        torch.testing.assert_close(p.grad, before)
    assert clipper.window()["grad/clip_fraction"] == 0.0


def test_value_mode_clamps_elementwise() -> None:
    net = make_net(scale=5.0)
    g = grads(net)
    clipper = GradientClipper("value", clip_value=0.3)
    clipper.measure_after = True
    clipper.clip(net)
    for before, p in zip(g, net.parameters(), strict=True):
        torch.testing.assert_close(p.grad, before.clamp(-0.3, 0.3))
    after = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in net.parameters()))
    assert clipper.window()["grad/norm_total_after_clip"] == pytest.approx(after, rel=1e-5)


def test_per_param_norm_mode() -> None:
    net = make_net(scale=3.0)
    g = grads(net)
    clipper = GradientClipper("per_param_norm", max_norm=0.5)
    clipper.clip(net)
    expected = [x * min(1.0, 0.5 / (float(x.norm()) + 1e-6)) for x in g]
    for e, p in zip(expected, net.parameters(), strict=True):
        torch.testing.assert_close(p.grad, e)
        assert float(p.grad.norm()) <= 0.5 + 1e-5
    after = math.sqrt(sum(float(x.pow(2).sum()) for x in expected))
    assert clipper.window()["grad/norm_total_after_clip"] == pytest.approx(after, rel=1e-5)


@pytest.mark.parametrize("clip_last", [False, True])
def test_agc_mode_is_unitwise(clip_last: bool) -> None:
    """Brock et al. 2021: g_i <- g_i * lam * max(||w_i||, eps) / ||g_i|| where the ratio
    ||g_i|| / max(||w_i||, eps) exceeds lam; rows of weight matrices are the units."""
    net = make_net(scale=5.0)
    g = grads(net)
    lam, eps = 0.05, 1e-3
    clipper = GradientClipper("agc", agc_lambda=lam, agc_eps=eps, agc_clip_last_layer=clip_last)
    clipper.clip(net)
    params = list(net.parameters())
    last = {id(params[-1]), id(params[-2])}  # the final Linear's weight and bias
    for before, p in zip(g, params, strict=True):
        if id(p) in last and not clip_last:
            torch.testing.assert_close(p.grad, before)
            continue
        w = p.detach()
        if w.dim() == 1:
            w_norm, g_norm = [max(float(w.norm()), eps)], [float(before.norm())]
            rows_b, rows_a = [before], [p.grad]
        else:
            w_norm = [max(float(r.norm()), eps) for r in w]
            g_norm = [float(r.norm()) for r in before]
            rows_b, rows_a = list(before), list(p.grad)
        for wn, gn, rb, ra in zip(w_norm, g_norm, rows_b, rows_a, strict=True):
            expected = rb * (lam * wn / gn) if gn / wn > lam else rb
            torch.testing.assert_close(ra, expected, rtol=1e-5, atol=1e-7)
    assert unitwise_norm(torch.ones(3, 4)).shape == (3, 1)


def test_auto_mode_clips_at_a_percentile_of_the_history() -> None:
    """AutoClip (Seetharaman et al. 2020): threshold = percentile p of all norms so far."""
    clipper = GradientClipper("auto", percentile=25.0)
    history = []
    for step, scale in enumerate([1.0, 3.0, 0.5, 10.0, 2.0]):
        net = make_net(seed=step, scale=scale)
        g = grads(net)
        total = math.sqrt(sum(float(x.pow(2).sum()) for x in g))
        history.append(total)
        threshold = float(np.percentile(history, 25.0))  # linear interpolation, as nanquantile
        clipper.clip(net)
        coef = min(1.0, threshold / (total + 1e-6))
        for before, p in zip(g, net.parameters(), strict=True):
            torch.testing.assert_close(p.grad, before * coef)
        assert float(clipper.last_threshold) == pytest.approx(threshold, rel=1e-5)
    values = clipper.window()
    assert 0.0 < values["grad/clip_fraction"] < 1.0  # the first step is never clipped
    assert values["grad/clip_threshold"] == pytest.approx(float(np.percentile(history, 25.0)),
                                                          rel=1e-5)


def test_none_mode_and_bad_settings() -> None:
    net = make_net()
    g = grads(net)
    clipper = GradientClipper("none")
    assert not clipper.active
    clipper.clip(net)
    for before, p in zip(g, net.parameters(), strict=True):
        torch.testing.assert_close(p.grad, before)
    with pytest.raises(UserError, match="'mode' must be one of.*Did you mean 'norm'"):
        GradientClipper("nrom")
    with pytest.raises(UserError, match="max_norm"):
        GradientClipper("norm", max_norm=0.0)


def read_csv_metrics(run: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    with open(run / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k != "step" and v not in ("", None):
                    out.setdefault(k, []).append((int(row["step"]), float(v)))
    return out


def test_the_window_closes_itself_on_logging_steps() -> None:
    """With `log_every=3` the window closes on steps 2 and 5, each with the share of its steps
    that clipped and its last step's norms, kept on the device until `take_closed`, which
    reads them all at once."""
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    numel = sum(p.numel() for p in net.parameters())
    clock = SimpleNamespace(global_step=0)
    object.__setattr__(net, "_trainer", clock)  # what grad_stats reads the step from
    clipper = GradientClipper("norm", max_norm=1.0)
    clipper.log_every = 3
    scales = [2.0, 0.5, 3.0, 0.1, 4.0, 0.2]  # ||g|| of each step: clipped where > 1
    for step, norm in enumerate(scales):
        clock.global_step = step
        for q in net.parameters():
            q.grad = torch.full_like(q, norm / math.sqrt(numel))
        clipper.clip(net)
        assert len(clipper.closed) == step // 3  # (closed when the next step comes)
    tags = ("grad/clip_fraction", "grad/norm_total_before_clip", "grad/norm_total_after_clip",
            "grad/clip_threshold")
    ((got_tags, rows),) = clipper.take_closed()
    assert got_tags == tags and [s for s, _ in rows] == [2, 5]
    np.testing.assert_allclose(rows[0][1], [2 / 3, 3.0, 1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(rows[1][1], [1 / 3, 0.2, 0.2, 1.0], rtol=1e-5)
    assert clipper.closed == [] and clipper.take_closed() == []
    # LBFGS calls the clipper several times in one step: still one window per logging step
    for step, norm in [(6, 2.0), (7, 0.5), (8, 3.0), (8, 3.0), (9, 0.1)]:
        clock.global_step = step
        for q in net.parameters():
            q.grad = torch.full_like(q, norm / math.sqrt(numel))
        clipper.clip(net)
    clipper.settle()
    ((_, rows),) = clipper.take_closed()
    assert [s for s, _ in rows] == [8]
    np.testing.assert_allclose(rows[0][1], [3 / 4, 3.0, 1.0, 1.0], rtol=1e-5)


def test_clipping_in_a_run_logs_before_and_after(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("debug=limit", "trainer.max_epochs=1", "logger=csv", "test=false",
                   "callbacks.grad_clip.mode=norm", "callbacks.grad_clip.max_norm=0.05")
    train(cfg)
    m = read_csv_metrics(tmp_path / "run")
    before = dict(m["grad/norm_total_before_clip"])
    after = dict(m["grad/norm_total_after_clip"])
    assert sorted(after) == [0, 1, 2, 3, 4]  # debug=limit logs every step
    for step, value in after.items():
        assert value <= 0.05 * (1 + 1e-4)
        assert before[step] >= value
        # the monitor's grad/norm_total is the norm before clipping (same step)
        assert dict(m["grad/norm_total"])[step] == pytest.approx(before[step], rel=1e-5)
    assert all(v == 1.0 for _, v in m["grad/clip_fraction"])


def test_clipping_twice_is_a_user_error(make_cfg) -> None:
    cfg = make_cfg("debug=limit", "trainer.max_epochs=1", "callbacks.grad_clip.mode=norm",
                   "trainer.gradient_clip_val=1.0")
    with pytest.raises(UserError, match="would clip twice"):
        train(cfg)


def test_clipping_with_manual_optimization_is_a_user_error() -> None:
    import lightning.pytorch as L

    from losslab.callbacks.clipping import GradClip

    class Manual(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

    trainer = SimpleNamespace(gradient_clip_val=None)
    with pytest.raises(UserError, match="manual optimization"):
        GradClip(mode="norm").setup(trainer, Manual(), "fit")
