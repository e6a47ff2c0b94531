"""TensorBoard for real: a short run, then a `tensorboard` server on 127.0.0.1 over the run folder,
read back over HTTP: gradient-norm scalars, the custom-scalars layout, histograms, heatmap."""

from __future__ import annotations

import io
import json
import math
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from losslab.callbacks.tensorboard import use_fast_tensorboard_crc
from losslab.run import train

TENSORBOARD = Path(sys.executable).parent / "tensorboard"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, **query: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def wait_for(port: int, proc: subprocess.Popen, deadline_s: float = 90.0) -> dict[str, Any]:
    """Poll until the server is up and has loaded the scalar tags (bounded)."""
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"tensorboard exited with {proc.returncode}")
        try:
            tags = get(port, "/data/plugin/scalars/tags")
            if any("grad/norm_total" in t for t in tags.values()):
                return tags
        except OSError as e:  # not listening yet
            last = e
        time.sleep(0.5)
    raise TimeoutError(f"tensorboard did not serve the run within {deadline_s}s ({last})")


@pytest.mark.skipif(not TENSORBOARD.exists(), reason="tensorboard CLI not installed")
def test_tensorboard_serves_gradient_charts(make_cfg, tmp_path) -> None:
    cfg = make_cfg("debug=limit", "test=false", "callbacks.grad_monitor.histogram_every_n_steps=5",
                   "callbacks.grad_monitor.heatmap_every_n_epochs=1")
    train(cfg)
    run = tmp_path / "run"
    port = free_port()
    log = (tmp_path / "tensorboard.log").open("w")
    proc = subprocess.Popen(
        [str(TENSORBOARD), "--logdir", str(run), "--host", "127.0.0.1", "--port", str(port),
         "--load_fast", "false", "--reload_interval", "1"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        tags = wait_for(port, proc)
        runs = get(port, "/data/runs")
        assert runs == ["tensorboard"]
        scalar_tags = set(tags["tensorboard"])
        layers = ["model.blocks.0.linear", "model.blocks.1.linear", "model.blocks.2.linear",
                  "model.head"]
        for layer in layers:
            assert {f"grad/norm/{layer}", f"grad/update_ratio/{layer}",
                    f"weight/norm/{layer}"} <= scalar_tags

        def series(tag: str) -> dict[int, float]:
            rows = get(port, "/data/plugin/scalars/scalars", run="tensorboard", tag=tag)
            return {int(step): float(value) for _, step, value in rows}

        total = series("grad/norm_total")
        assert sorted(total) == list(range(10))  # 2 epochs x 5 steps, logged every step
        per_layer = [series(f"grad/norm/{layer}") for layer in layers]
        for step, value in total.items():  # ||g||^2 = sum over layers of ||g_layer||^2
            assert math.isfinite(value) and value > 0
            assert math.sqrt(sum(s[step] ** 2 for s in per_layer)) == pytest.approx(value,
                                                                                   rel=1e-4)
        ratios = series("grad/update_ratio/model.blocks.0.linear")
        assert sorted(ratios) == [9] and 0 < ratios[9] < 1  # update_ratio_every_n_steps=10

        layout = get(port, "/data/plugin/custom_scalars/layout")
        categories = {c["title"]: c for c in layout["category"]}
        overview = {chart["title"]: chart for chart in categories["gradients"]["chart"]}
        assert overview["gradient norm per layer"]["multiline"]["tag"] == [r"grad/norm/.*"]
        assert "update / weight ratio per layer" in overview
        by_layer = categories["gradients by layer (norm, update ratio)"]["chart"]
        assert [c["title"] for c in by_layer] == layers

        histograms = get(port, "/data/plugin/histograms/tags")["tensorboard"]
        assert "grad_hist/model.blocks.0.linear" in histograms
        assert "weight_hist/model.head" in histograms
        images = get(port, "/data/plugin/images/tags")["tensorboard"]
        assert "grad/norm_heatmap" in images and "grad/norm_heatmap_labelled" in images
        # the hand-written palette PNG, as TensorBoard serves it to the browser, decodes
        entries = get(port, "/data/plugin/images/images", run="tensorboard",
                      tag="grad/norm_heatmap", sample="0")
        assert entries and entries[-1]["step"] == 10
        url = (f"http://127.0.0.1:{port}/data/plugin/images/individualImage?"
               f"{entries[-1]['query']}")
        with urllib.request.urlopen(url, timeout=10) as response:
            blob = response.read()
        picture = Image.open(io.BytesIO(blob))
        assert picture.format == "PNG" and picture.mode == "P"
        assert picture.size == (800, 8 * len(layers))  # 8-pixel rows, ~800 pixels wide
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_fast_crc_matches_tensorboards_own(tmp_path) -> None:
    pytest.importorskip("google_crc32c")
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.summary.writer import record_writer

    assert use_fast_tensorboard_crc()
    for n in (0, 1, 5, 100, 4097):
        data = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        assert record_writer.masked_crc32c(data) == masked_crc32c(data)
