"""The command-line tools on a real (tiny) run: landscape, report, gradcheck, bench_sharpness."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import losslab.run
from losslab.diagnostics.landscape import parameters_of
from tests.conftest import DATA_DIR, QUIET, ROOT, compose_cfg, script

RUN = ["debug=limit", "model.hidden=[16,16]", "data.batch_size=50",
       "callbacks=[default,sharpness]", "callbacks.sharpness.every_n_epochs=1",
       "callbacks.sharpness.iterations=5", "callbacks.sharpness.trace_probes=2"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A two-epoch run with TensorBoard, checkpoints, per-layer gradient norms and sharpness;
    its .hydra/overrides.yaml as Hydra writes it; and the model's initial weights."""
    run = tmp_path_factory.mktemp("diag") / "run"
    overrides = [f"paths.data_dir={DATA_DIR}", *QUIET, *RUN]
    captured = {}
    original = losslab.run.build_task

    def capture(cfg):
        task, dm = original(cfg)
        captured.update(parameters_of(task.model))
        return task, dm

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(losslab.run, "build_task", capture)
        losslab.run.train(compose_cfg(run, *RUN))
    (run / ".hydra").mkdir(exist_ok=True)
    (run / ".hydra" / "overrides.yaml").write_text("\n".join(f"- {o}" for o in overrides))
    return run, captured


def test_landscape_rebuilds_the_initial_weights(tiny_run) -> None:
    run, initial = tiny_run
    landscape = script("landscape")
    options = landscape.Options(ckpt_path=str(run / "checkpoints" / "last.ckpt"))
    weights = landscape.load_weights(options, [])
    assert weights["init"].keys() == initial.keys()
    assert all(torch.equal(weights["init"][k], initial[k]) for k in initial)
    assert not all(torch.equal(weights["final"][k], initial[k]) for k in initial)


def test_landscape_writes_pictures_and_tensorboard_images(tiny_run, capsys) -> None:
    run, _ = tiny_run
    code = script("landscape").main([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
                                     "resolution=5", "steps_1d=5", "num_batches=1",
                                     "progress=false"])
    assert code == 0
    out = run / "landscape"
    assert all((out / f).stat().st_size > 1000 for f in ("landscape_1d.png", "landscape_2d.png"))
    summary = json.loads((out / "landscape.json").read_text())
    assert summary["surface_centre"] == pytest.approx(summary["train_loss_final"], rel=1e-5)
    assert summary["surface_min"] <= summary["surface_centre"] <= summary["surface_max"]
    assert summary["training_samples"] == 50
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"landscape/interpolation_1d", "landscape/surface_2d"} <= set(events.Tags()["images"])
    assert "5x5 surface" in capsys.readouterr().out


def test_landscape_usage_errors(tiny_run, tmp_path, capsys) -> None:
    landscape = script("landscape")
    assert landscape.main(["resolution=5"]) == 2
    assert "'ckpt_path' must be set" in capsys.readouterr().err
    assert landscape.main([f"ckpt_path={tmp_path / 'missing.ckpt'}"]) == 2
    assert "no checkpoint file" in capsys.readouterr().err
    ckpt = tiny_run[0] / "checkpoints" / "last.ckpt"
    assert landscape.main([f"ckpt_path={ckpt}", "model.hidden=[8]"]) == 2
    assert "does not fit the model" in capsys.readouterr().err
    assert landscape.main([f"ckpt_path={ckpt}", "resolution=1"]) == 2
    assert "'resolution' must be in [2, 401], got 1" in capsys.readouterr().err


def test_report_on_a_run_folder_writes_curves(tiny_run, capsys) -> None:
    run, _ = tiny_run
    assert script("report").main([str(run)]) == 0
    for name in ("loss", "metrics", "grad_norms", "sharpness"):
        assert (run / "report" / f"{name}.png").stat().st_size > 1000, name
    out = capsys.readouterr().out
    assert "val/loss" in out and "val/acc" in out


def test_report_on_a_folder_without_events(tmp_path, capsys) -> None:
    assert script("report").main([str(tmp_path)]) == 2
    assert "no TensorBoard scalars" in capsys.readouterr().err


def test_gradcheck_cli_exit_codes(capsys) -> None:
    gradcheck = script("gradcheck")
    assert gradcheck.main(["loss=hinge"]) == 0
    out = capsys.readouterr().out
    assert "hinge multi-class, mean" in out and "non-differentiable at 4 point(s)" in out
    assert gradcheck.main(["loss=focall"]) == 2
    assert "Did you mean 'focal'" in capsys.readouterr().err
    assert gradcheck.main(["eps=big"]) == 2
    assert "'eps' must be a float" in capsys.readouterr().err
    assert gradcheck.main(["model=mlp", "model.hidden=[8]", "model.activation=relu",
                           f"paths.data_dir={DATA_DIR}", "samples=2"]) == 0
    assert "input x" in capsys.readouterr().out


def test_gradcheck_finds_a_planted_bug_from_the_command_line() -> None:
    """A loss registered by a user module (`imports=[...]`) with a wrong backward: exit 1."""
    env_path = f"{ROOT / 'tests' / 'diagnostics'}"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gradcheck.py"),
                          "imports=[planted_bug]", "loss=mse", "loss.name=planted_wrong_mse"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": env_path})
    assert res.returncode == 1, res.stderr[-2000:]
    assert "likely bug" in res.stdout and "planted_wrong_mse" in res.stderr


def test_bench_sharpness_writes_json(tmp_path, capsys) -> None:
    path = tmp_path / "sharpness.json"
    assert script("bench_sharpness").main(["--reps", "1", "--json", str(path),
                                           "model.hidden=[16]"]) == 0
    result = json.loads(path.read_text())
    assert result["seconds_per_evaluation"] > 0 and result["iterations"] == 20
    assert "sharpness evaluation" in capsys.readouterr().out


def test_report_on_a_sweep_folder_keeps_the_sweep_summary(tmp_path, capsys) -> None:
    for job, loss, acc in (("0", "ce", 0.5), ("1", "focal", 0.4)):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- loss={loss}\n")
        (tmp_path / job / "metrics.json").write_text(json.dumps({"test/acc": acc}))
    assert script("report").main([str(tmp_path), "--no-curves"]) == 0
    assert (tmp_path / "summary.md").is_file() and not (tmp_path / "report").exists()
    assert "2 jobs: 2 ok" in capsys.readouterr().out


def test_bench_startup_reference_script_and_table_row(tmp_path) -> None:
    """The plain-PyTorch reference of the start-up benchmark runs (a fresh process that builds
    the default MLP and Adam) and the table shows both references next to losslab's time."""
    bench_startup = script("bench_startup")
    seconds = bench_startup.script_marker(tmp_path, bench_startup.RAW_SCRIPT)
    empty = bench_startup.script_marker(tmp_path, bench_startup.IMPORT_SCRIPT.format(imports=""))
    assert 0 < empty < seconds < 120  # an empty script reaches its marker before torch's
    startup = {"first_step_s": 5.5, "import_losslab_s": 0.001, "raw_first_step_s": 2.7,
               "import_lightning_s": 5.4}
    table = script("bench").markdown({"date": "today", "machine": "here", "startup": startup})
    row = next(line for line in table.splitlines() if line.startswith("| start-up"))
    assert "plain PyTorch script -> first step 2.70 s" in row
    assert "`import lightning.pytorch` 5.40 s" in row and row.endswith("| **no** |")
