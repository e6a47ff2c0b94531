"""Under DDP the gradient callbacks read the gradients after the all-reduce: two gloo ranks
on CPU see the same gradients (their local batches differ, so before the all-reduce they would
not), and rank zero logs exactly their norm (with FastStep on, as in every default run); an
active clipper clips on both ranks and rank zero logs its window at every step."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.callbacks.test_grad_device_path import scalars
from tests.conftest import DATA_DIR, ROOT


@pytest.mark.slow
def test_ddp_ranks_log_the_all_reduced_gradient_norm(tmp_path) -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "trainer=ddp_cpu", "debug=limit",
         "logger=csv", "test=false", "callbacks.lr_monitor=null",
         "callbacks.rich_progress_bar=null", "trainer.log_every_n_steps=1",
         "trainer.limit_train_batches=12", "callbacks.grad_clip.mode=norm",
         "callbacks.grad_clip.max_norm=0.05",
         "+callbacks.rank_norms._target_=tests.callbacks.ddp_probe.RankNorms",
         f"paths.output_dir={tmp_path}", f"paths.data_dir={DATA_DIR}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [{int(k): v for k, v in json.loads(
        (tmp_path / f"rank_norms_{r}.json").read_text()).items()} for r in (0, 1)]
    assert len(ranks[0]) == 24 and ranks[0] == ranks[1]  # all-reduced: the same on both
    logged = scalars(tmp_path)["grad/norm_total"]
    assert logged.keys() == ranks[0].keys()
    for step, norm in ranks[0].items():
        assert math.isclose(logged[step], norm, rel_tol=1e-5), (step, logged[step], norm)
    # the clipper (active, under FastStep on rank zero) logs each step's window from rank zero
    before = scalars(tmp_path)["grad/norm_total_before_clip"]
    after = scalars(tmp_path)["grad/norm_total_after_clip"]
    assert before == logged and after.keys() == logged.keys()
    assert all(after[s] <= 0.05 * (1 + 1e-4) and after[s] <= before[s] for s in after)
    health = json.loads((tmp_path / "grad_health.json").read_text())["summary"]
    assert health["steps_judged"] == 24 and health["events"]["non_finite"] == 0
