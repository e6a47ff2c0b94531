"""The GPU row of `make bench`, run on CPU: `bench_framework.py`'s CNN comparison (the GPU
row's model family, narrowed to run in seconds) feeds the row's samples/s and ratios. No GPU has
been lent to this project, so the CUDA-only parts (bf16 autocast, `trainer=gpu`,
synchronisation) have not run; this checks everything around them."""

from __future__ import annotations

import re

from tests.conftest import script

CNN = ["experiment=mnist1d_cnn", "data.batch_size=512", "model.channels=[8,8,8]"]


def test_no_cuda_means_a_skipped_row() -> None:
    assert script("bench").gpu_summary(None) == "skipped: no CUDA"


def test_the_cnn_comparison_reports_samples_per_second() -> None:
    framework = script("bench_framework")
    results = framework.main(["--reps", "2", "--warmup-epochs", "1", *CNN])
    assert results["batch_size"] == 512 and results["device_name"] == "CPU"
    assert results["model"] == "MNIST-1D CNN 8-8-8"
    variants = results["variants"]
    assert set(variants) == {"raw", "lightning", "losslab"}
    for row in variants.values():
        assert row["samples_per_s"] == 512 * row["steps_per_s"] > 0
    text = script("bench").gpu_summary(results)
    assert re.fullmatch(
        r"\(a\) [\d,]+ samples/s; \(b\) [\d,]+ samples/s = \*\*\d+\.\d\dx\*\* \(a\)'s step time; "
        r"\(c\) [\d,]+ samples/s = \*\*\d+\.\d\dx\*\* \(a\)'s step time "
        r"\(MNIST-1D CNN 8-8-8, batch 512, CPU\)", text), text
