"""The GPU row of `make bench`, run on CPU: `bench_framework.py`'s CNN comparison (the GPU
row's model family, narrowed to run in seconds) feeds the row's samples/s and ratios, in float32
and with the row's bf16 autocast (`--bf16`, which CPU autocast runs too). No GPU has been lent
to this project, so the CUDA-only parts (`trainer=gpu`, CUDA autocast, synchronisation) have not
run; this checks everything around them."""

from __future__ import annotations

import re

import pytest

from tests.conftest import script

CNN = ["experiment=mnist1d_cnn", "data.batch_size=512", "model.channels=[8,8,8]"]


def test_no_cuda_means_a_skipped_row() -> None:
    assert script("bench").gpu_summary(None) == "skipped: no CUDA"


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
def test_the_cnn_comparison_reports_samples_per_second(bf16: bool) -> None:
    framework = script("bench_framework")
    results = framework.main(["--reps", "2", "--warmup-epochs", "1",
                              *(["--bf16"] if bf16 else []), *CNN])
    assert results["batch_size"] == 512 and results["device_name"] == "CPU"
    model = "MNIST-1D CNN 8-8-8" + (", bf16" if bf16 else "")
    assert results["model"] == model
    # what the model really output in each variant's first step: autocast ran in all three
    dtype = "bfloat16" if bf16 else "float32"
    assert results["output_dtypes"] == {"raw": dtype, "lightning": dtype, "losslab": dtype}
    variants = results["variants"]
    assert set(variants) == {"raw", "lightning", "losslab"}
    for row in variants.values():
        assert row["samples_per_s"] == 512 * row["steps_per_s"] > 0
    text = script("bench").gpu_summary(results)
    assert re.fullmatch(
        r"\(a\) [\d,]+ samples/s; \(b\) [\d,]+ samples/s = \*\*\d+\.\d\dx\*\* \(a\)'s step time; "
        r"\(c\) [\d,]+ samples/s = \*\*\d+\.\d\dx\*\* \(a\)'s step time "
        rf"\({re.escape(model)}, batch 512, CPU\)", text), text


def test_the_gpu_row_config_composes_and_builds(tmp_path) -> None:
    """What `--device cuda` runs, composed and built on CPU: a config typo in the GPU row would
    otherwise first show on a lent GPU."""
    from losslab.run import build_task

    framework = script("bench_framework")
    cfg = framework.compose_default(tmp_path, framework.GPU_OVERRIDES, 1)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.data.batch_size == 512
    task, _ = build_task(cfg)
    assert framework.describe(cfg) == "MNIST-1D CNN 128-256-256"
    assert sum(p.numel() for p in task.model.parameters()) > 100_000
