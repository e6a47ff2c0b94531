"""Gradient noise scale B_simple = tr(Σ)/|G|²: estimators, chunked gradients, the callback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from losslab.callbacks.noise_scale import NoiseScale, chunk_grad_sq_norms, two_batch_estimates
from losslab.errors import UserError
from losslab.run import train


def test_two_batch_estimates_are_unbiased():
    """Per-sample gradients g_i = G + e_i, e_i ~ N(0, s² I): tr(Σ) = d s², |G|² known."""
    g = torch.Generator().manual_seed(0)
    d, s, b, chunks, trials = 50, 2.0, 8, 4, 4000
    G = torch.randn(d, generator=g) * 0.3
    per_sample = G + s * torch.randn(trials, chunks * b, d, generator=g)
    chunk_means = per_sample.view(trials, chunks, b, d).mean(2)          # g_j, batch b
    small = chunk_means.square().sum(-1).mean(-1)                       # mean_j |g_j|²
    big = chunk_means.mean(1).square().sum(-1)                           # |g_B|², B = 32
    grad_sq, trace = two_batch_estimates(small, big, b, chunks * b)
    assert trace.mean().item() == pytest.approx(d * s**2, rel=0.02)
    assert grad_sq.mean().item() == pytest.approx(G.square().sum().item(), rel=0.1)
    b_simple = trace.mean() / grad_sq.mean()
    assert b_simple.item() == pytest.approx(d * s**2 / G.square().sum().item(), rel=0.1)


def test_chunk_norms_match_explicit_gradients():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3))
    x, y = torch.randn(12, 5), torch.randint(0, 3, (12,))
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    small, big, b, B = chunk_grad_sq_norms(model, loss_fn, x, y, chunks=3)
    grads = []
    for j in range(3):
        model.zero_grad()
        loss_fn(model(x[4 * j:4 * j + 4]), y[4 * j:4 * j + 4]).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert (b, B) == (4, 12)
    assert small.item() == pytest.approx(torch.stack(grads).square().sum(1).mean().item())
    assert big.item() == pytest.approx(torch.stack(grads).mean(0).square().sum().item())
    model.zero_grad()
    loss_fn(model(x), y).mean().backward()  # mean of chunk means = gradient of the batch
    full = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert big.item() == pytest.approx(full.square().sum().item(), rel=1e-5)


SHORT = ["callbacks=[default,noise_scale]", "callbacks.noise_scale.every_n_steps=2",
         "trainer.max_epochs=2", "+trainer.limit_train_batches=10",
         "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1",
         "model=cnn1d", "model.channels=[8,8]", "data.batch_size=64"]  # BatchNorm + dropout


def test_callback_logs_b_simple_and_leaves_training_unchanged(make_cfg, tmp_path):
    with_cb = make_cfg(*SHORT)
    metrics = train(with_cb)
    assert metrics["noise/b_simple_epoch"] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = next(Path(with_cb.paths.output_dir).glob("tensorboard/**/events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("noise/b_simple")]
    assert steps == list(range(1, 21, 2))  # after steps 1, 3, ..., 19
    for tag in ("noise/trace_sigma", "noise/grad_sq", "noise/b_simple_raw"):
        assert len(acc.Scalars(tag)) == 10
    without = make_cfg(*SHORT[2:], f"paths.output_dir={tmp_path / 'plain'}")
    plain = train(without)
    # the extra forward/backward restores the RNG and the BatchNorm statistics
    assert plain["test/loss"] == metrics["test/loss"]
    a = torch.load(Path(with_cb.paths.output_dir) / "checkpoints" / "last.ckpt",
                   weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "plain" / "checkpoints" / "last.ckpt",
                   weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="chunks"):
        NoiseScale(chunks=1)
    with pytest.raises(UserError, match="ema"):
        NoiseScale(ema=1.0)
