"""A user's own loss: registered in their module (`loss=my_loss` + a yaml in their config
folder) or named by `_target_` in a yaml; both from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import DATA_DIR, ROOT

MODULE = textwrap.dedent('''
    import torch.nn.functional as F
    from losslab.losses import LOSSES, Loss

    @LOSSES.register("my_test_loss")
    class MyLoss(Loss):
        kind = "classification"

        def per_sample(self, pred, target):
            return F.cross_entropy(pred, target, reduction="none")

    class TargetLoss(MyLoss):
        def __init__(self, scale: float = 1.0, reduction: str = "mean"):
            super().__init__(reduction)
            self.scale = scale

        def per_sample(self, pred, target):
            return self.scale * super().per_sample(pred, target)
''')


@pytest.mark.parametrize("option,extra", [("my_test_loss", ["imports=[my_losses]"]),
                                          ("by_target", [])])
def test_custom_loss_from_the_command_line(tmp_path, option, extra):
    (tmp_path / "my_losses.py").write_text(MODULE)
    conf = tmp_path / "myconf" / "loss"
    conf.mkdir(parents=True)
    (conf / "my_test_loss.yaml").write_text("name: my_test_loss\n")
    (conf / "by_target.yaml").write_text("_target_: my_losses.TargetLoss\nscale: 2.0\n")
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"hydra.searchpath=[file://{tmp_path / 'myconf'}]",
         f"loss={option}", *extra, "debug=fast_dev_run", f"hydra.run.dir={run}",
         f"paths.data_dir={DATA_DIR}", "callbacks.rich_progress_bar=null",
         "callbacks.rich_model_summary=null"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "test/loss" in json.loads((run / "metrics.json").read_text())
