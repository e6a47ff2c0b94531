"""Bad input gets one clear UserError naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from losslab.cli import check_group_keys, check_output_dir, check_overrides
from losslab.errors import UserError
from losslab.run import train


@pytest.mark.parametrize("arg,match", [
    ("loss=focall", r"Unknown loss 'focall'.*Did you mean 'focal'"),
    ("optim=adamm", r"Unknown optim 'adamm'.*Did you mean 'adam'"),
    ("data=mnist", r"Unknown data 'mnist'.*Did you mean 'mnist1d'"),
    ("model=resnet999",
     r"Unknown model 'resnet999'.*Allowed model options: cnn1d, cnn2d, gru, linear, mlp"),
])
def test_unknown_group_options(arg, match):
    with pytest.raises(UserError, match=match):
        check_overrides([arg])


@pytest.mark.parametrize("args,match", [
    (["loss=focal", "loss.gama=2"], r"Unknown key 'gama' in loss 'focal'.*Did you mean 'gamma'"),
    (["optim.lrr=1"], r"Unknown key 'lrr' in optim 'adam'.*Did you mean 'lr'"),
    (["data.batch_sizee=3"], r"Unknown key 'batch_sizee' in data 'mnist1d'"),
])
def test_unknown_keys(args, match):
    with pytest.raises(UserError, match=match):
        check_group_keys(args)


def test_known_and_added_keys_pass():
    check_group_keys(["loss=focal", "loss.gamma=1", "+loss.extra=1", "optim=momentum",
                      "optim.momentum=0.5", "data=diabetes", "data.standardize_target=false"])


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot be written.*hydra.run.dir"):
        check_output_dir([f"hydra.run.dir={blocker}/run"])


@pytest.mark.parametrize("overrides,match", [
    (["optim.lr=fast"], r"optimizer 'adam': 'lr' must be a number, got 'fast'"),
    (["optim.lr=-1"], r"'lr' must be in \(0, inf\), got -1"),
    (["loss=focal", "loss.gamma=-1"], r"'gamma' must be in \[0, inf\), got -1"),
    (["data.batch_size=0"], "'batch_size' must be a positive integer, got 0"),
    (["trainer.max_epochs=-5"], "trainer: `max_epochs` must be a non-negative integer"),
    (["data.val_fraction=1.5"], r"'val_fraction' must be in \(0, 1\), got 1.5"),
    (["loss=mse", "data=digits"], "loss 'mse' is a regression loss, but data 'digits'"),
    (["loss=bce"], "loss 'bce' is binary, but data 'mnist1d' has 10 classes"),
])
def test_bad_values_are_user_errors(make_cfg, overrides, match):
    with pytest.raises(UserError, match=match):
        train(make_cfg(*overrides, "debug=fast_dev_run"))


def test_a_file_that_is_not_a_checkpoint(make_cfg, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_text("not a checkpoint")
    with pytest.raises(UserError, match="is not a Lightning checkpoint"):
        train(make_cfg("train=false", f"ckpt_path={bad}"))
