"""Multi-task runs end to end: every strategy on both data sets, errors, sigma recovery."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from losslab.errors import UserError
from losslab.run import build_task, train
from losslab.tasks.multitask import MultiTaskModule
from tests.conftest import DATA_DIR, ROOT

STRATEGIES = ["equal", "fixed", "uncertainty", "dwa", "gradnorm"]
FAST = ["model=multitask", "debug=fast_dev_run", "logger=none", "callbacks.lr_monitor=null"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_runs_on_synthetic_with_a_classification_task(make_cfg, strategy):
    extra = ["multitask.weights=[1.0,2.0,0.5,1.0]"] if strategy == "fixed" else []
    metrics = train(make_cfg(*FAST, "data=multitask_synthetic", f"multitask={strategy}",
                             "data.classification=true", "+data.losses.cls={name: ce}",
                             *extra))
    assert {"test/reg0/rmse", "test/cls/acc", "multitask/weight/cls",
            "multitask/loss/reg2"} <= set(metrics)
    assert ("multitask/sigma/reg0" in metrics) == (strategy == "uncertainty")


@pytest.mark.parametrize("strategy", ["uncertainty", "gradnorm", "dwa"])
def test_digits_tasks(make_cfg, strategy):
    metrics = train(make_cfg(*FAST, "data=multitask_digits", f"multitask={strategy}"))
    assert {"test/digit/acc", "test/parity/acc", "test/ink/rmse",
            "multitask/weight/ink"} <= set(metrics)


def test_digits_targets(make_cfg):
    _, dm = build_task(make_cfg("data=multitask_digits", "model=multitask"))
    y = dm.splits["train"][1]
    assert [t.name for t in dm.tasks] == ["digit", "parity", "ink"]
    assert torch.equal(y[:, 1], y[:, 0] % 2)
    assert y[:, 2].mean().abs() < 1e-4 and (y[:, 2].std() - 1).abs() < 1e-2  # train-standardised


def test_learned_weights_are_checkpointed(make_cfg):
    task, _ = build_task(make_cfg("data=multitask_synthetic", "model=multitask",
                                  "multitask.weighting=uncertainty"))
    assert isinstance(task, MultiTaskModule)
    assert "weighting.log_vars" in task.state_dict()


def test_errors_name_the_tasks(make_cfg):
    with pytest.raises(UserError, match=r"reg2 have no loss.*reg0, reg1, reg2"):
        build_task(make_cfg("data=multitask_synthetic", "~data.losses.reg2"))
    with pytest.raises(UserError, match=r"loss\(es\) for extra name no task"):
        build_task(make_cfg("data=multitask_synthetic", "+data.losses.extra={name: mse}"))
    with pytest.raises(UserError, match=r"2 weights.*3 tasks \(reg0, reg1, reg2\)"):
        build_task(make_cfg("data=multitask_synthetic", "multitask=fixed",
                            "multitask.weights=[1,2]"))
    with pytest.raises(UserError, match="needs a multi-task data set"):
        build_task(make_cfg("data=digits", "multitask=uncertainty"))
    with pytest.raises(UserError, match="task 'reg0' is regression"):
        build_task(make_cfg("data=multitask_synthetic", "data.losses.reg0={name: ce}"))


def test_uncertainty_recovers_noise_std_on_a_short_run(make_cfg):
    """A shorter version of experiment=multitask_uncertainty: sigma within 25% after 8 epochs
    (from sigma = 1 at the start); the full experiment reaches 15%."""
    metrics = train(make_cfg("experiment=multitask_uncertainty", "trainer.max_epochs=8",
                             "data.num_samples=2000", "data.batch_size=64", "logger=none",
                             "callbacks.lr_monitor=null", "callbacks.model_checkpoint=null",
                             "test=false"))
    for k, std in enumerate([0.1, 1.0, 3.0]):
        sigma = metrics[f"multitask/sigma/reg{k}"]
        assert sigma == pytest.approx(std, rel=0.25), (k, sigma)
        weight = metrics[f"multitask/weight/reg{k}"]
        assert weight == pytest.approx(0.5 / sigma**2, rel=0.05)  # 1/2 e^{-s}, one step later
    assert not math.isnan(metrics["train/loss_epoch"])


@pytest.mark.slow
def test_ddp_ranks_hold_identical_sigmas(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "experiment=multitask_uncertainty",
         "trainer=ddp_cpu", "trainer.max_epochs=3", "logger=none", "callbacks.lr_monitor=null",
         "callbacks.rich_progress_bar=null", "test=false", f"paths.output_dir={tmp_path}",
         f"paths.data_dir={DATA_DIR}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ddp" / f"multitask_rank{r}.json").read_text())
             for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["log_vars"] != [0.0, 0.0, 0.0]  # they trained


def test_learned_sigma_is_in_the_checkpoint_and_dwa_moves_after_two_epochs(make_cfg, tmp_path):
    metrics = train(make_cfg("data=multitask_synthetic", "model=multitask", "multitask=uncertainty",
                             "debug=limit", "logger=none", "callbacks.lr_monitor=null",
                             "test=false"))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    log_vars = ckpt["state_dict"]["weighting.log_vars"]
    assert log_vars.abs().max() > 0
    assert torch.exp(log_vars[0] / 2).item() == pytest.approx(
        metrics["multitask/sigma/reg0"], rel=0.05)
    dwa = train(make_cfg("data=multitask_synthetic", "model=multitask", "multitask=dwa",
                         "debug=limit", "trainer.max_epochs=3", "logger=none",
                         "callbacks.lr_monitor=null", "test=false"))
    weights = [dwa[f"multitask/weight/reg{k}"] for k in range(3)]
    assert sum(weights) == pytest.approx(3.0) and weights != [1.0, 1.0, 1.0]
