"""GradMonitor without TensorBoard, with gradient accumulation, and its heatmap."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from losslab.callbacks.grad_monitor import GradMonitor, custom_scalars_layout
from losslab.callbacks.heatmap import NormHeatmap
from losslab.run import train


def csv_series(run: Path, tag: str) -> dict[int, float]:
    with open(run / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r[tag]) for r in csv.DictReader(f) if r.get(tag)}


def test_without_tensorboard_scalars_still_log_and_nothing_breaks(make_cfg, tmp_path) -> None:
    cfg = make_cfg("debug=limit", "logger=csv", "test=false", "trainer.log_every_n_steps=2",
                   "callbacks.grad_monitor.histogram_every_n_steps=1",
                   "callbacks.grad_monitor.update_ratio_every_n_steps=null",
                   "callbacks.grad_monitor.heatmap_every_n_epochs=1")
    train(cfg)
    run = tmp_path / "run"
    assert sorted(csv_series(run, "grad/norm_total")) == [1, 3, 5, 7, 9]  # (step+1) % 2 == 0
    ratio = csv_series(run, "grad/update_ratio/model.head")
    assert sorted(ratio) == [1, 3, 5, 7, 9] and all(0 < v < 1 for v in ratio.values())
    assert all(v > 0 for v in csv_series(run, "weight/norm/model.blocks.0.linear").values())


def test_update_ratio_interval_is_separate(make_cfg, tmp_path) -> None:
    cfg = make_cfg("debug=limit", "logger=csv", "test=false", "trainer.max_epochs=1",
                   "callbacks.grad_monitor.update_ratio_every_n_steps=2")
    train(cfg)
    run = tmp_path / "run"
    assert sorted(csv_series(run, "grad/norm_total")) == [0, 1, 2, 3, 4]
    assert sorted(csv_series(run, "grad/update_ratio/model.head")) == [1, 3]
    assert sorted(csv_series(run, "weight/norm/model.head")) == [1, 3]


def test_gradient_accumulation_logs_once_per_optimizer_step(make_cfg, tmp_path) -> None:
    cfg = make_cfg("debug=limit", "logger=csv", "test=false", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=8", "trainer.accumulate_grad_batches=2",
                   "callbacks.grad_clip.mode=norm", "callbacks.grad_clip.max_norm=0.01")
    train(cfg)
    run = tmp_path / "run"
    assert sorted(csv_series(run, "grad/norm_total")) == [0, 1, 2, 3]  # 8 batches / 2
    after = csv_series(run, "grad/norm_total_after_clip")
    assert sorted(after) == [0, 1, 2, 3] and max(after.values()) <= 0.01 * (1 + 1e-4)


def test_heatmap_bins_long_histories_and_renders() -> None:
    monitor = GradMonitor(heatmap_max_columns=10)
    names = ("model.blocks.0.linear", "model.head")
    for step in range(95):
        monitor._remember(step, names, [10.0 ** -(step % 4), 1.0])
    data, steps = monitor.heatmap()
    # 95 steps into at most 10 bins of 2^k steps: 16 steps each, the last one partial
    assert data.shape == (2, 6) and steps == [0, 16, 32, 48, 64, 80]
    assert np.allclose(data[1], 0.0)  # log10(1)
    assert np.allclose(data[0, :5], -1.5)  # mean of log10 1, 0.1, 0.01, 0.001
    image = monitor.render_heatmap()
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    fast = monitor.fast_heatmap(cell_height=4, width=60)
    assert fast.shape == (2 * 4, 6 * 10, 3) and fast.dtype == np.uint8
    # row 1 (log10 1 = 0, the maximum) is the brightest viridis colour
    assert (fast[4:, :, 1] >= fast[:4, :, 1]).all()


def test_heatmap_bins_equal_a_recount_from_scratch() -> None:
    """Folding epoch by epoch (with merges in between) gives the same grid as all at once."""
    rng = np.random.default_rng(0)
    norms = 10.0 ** rng.normal(size=(1000, 3))
    norms[17, 1] = float("nan")
    norms[400, 0] = float("inf")
    names = ("a", "b", "c")
    once, often = NormHeatmap(names, 16), NormHeatmap(names, 16)
    for step, row in enumerate(norms.tolist()):
        once.add(step, row)
        often.add(step, row)
        if step % 37 == 0:
            often.grid()
    (a, sa), (b, sb) = once.grid(), often.grid()
    assert sa == sb and np.allclose(a, b, equal_nan=True)
    width = 64  # 1000 steps -> 16 bins of 64 would be 1024: the smallest 2^k that fits
    assert sa == list(range(0, 1000, width))
    logs = np.log10(norms)
    for i, start in enumerate(sa):
        block = logs[start:start + width]
        expect = [np.mean(col[np.isfinite(col)]) for col in block.T]
        assert np.allclose(a[:, i], expect)


@pytest.mark.parametrize("max_columns", [2, 3, 7, 16])
@pytest.mark.parametrize("seed", [1, 2])
def test_heatmap_folds_at_any_points_into_the_same_bins(max_columns: int, seed: int) -> None:
    """Grids drawn after irregular numbers of steps (1, a few, many whole bins at once, across
    merges) end with the bins of a recount: consecutive runs of 2^k steps from step 0, each
    holding the mean of its finite log10 norms."""
    rng = np.random.default_rng(seed)
    total = int(rng.integers(50, 700))
    norms = 10.0 ** rng.normal(size=(total, 2))
    norms[rng.integers(0, total, 5), rng.integers(0, 2, 5)] = float("nan")
    heatmap = NormHeatmap(("a", "b"), max_columns)
    step = 0
    while step < total:
        for _ in range(min(int(rng.choice([1, 3, 17, 130])), total - step)):
            heatmap.add(step, norms[step].tolist())
            step += 1
        grid, starts = heatmap.grid()
        width = heatmap.width
        assert starts == list(range(0, step, width)) and len(starts) <= max_columns
        logs = np.log10(norms[:step])
        for i, start in enumerate(starts):
            block = logs[start:start + width]
            expect = [np.mean(col[np.isfinite(col)]) if np.isfinite(col).any() else np.nan
                      for col in block.T]
            assert np.allclose(grid[:, i], expect, equal_nan=True)


def test_custom_scalars_layout_groups_layers() -> None:
    layout = custom_scalars_layout(("model.blocks.0.linear",))
    chart = layout["gradients by layer (norm, update ratio)"]["model.blocks.0.linear"]
    assert chart == ["Multiline", [r"grad/norm/model\.blocks\.0\.linear$",
                                   r"grad/update_ratio/model\.blocks\.0\.linear$"]]


def test_fast_png_is_the_fast_image_in_a_palette() -> None:
    """The logged heatmap (a palette PNG) decodes to the RGB picture of `fast_image`, up to
    the palette's 255 levels; NaN cells are grey in both."""
    import io

    from PIL import Image

    from losslab.callbacks.heatmap import fast_image, fast_png

    data = np.log10(np.array([[1.0, 10.0, 100.0, float("nan")], [1e-3, 1e-2, 1e-1, 1.0]]))
    png, height, width = fast_png(data, cell_height=3, width=40)
    decoded = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    rgb = fast_image(data, cell_height=3, width=40)
    assert decoded.shape == rgb.shape == (height, width, 3) == (6, 40, 3)
    assert np.abs(decoded.astype(int) - rgb.astype(int)).max() <= 8  # adjacent viridis levels
    assert (decoded[:3, 30:] == 128).all()  # the NaN cell


def test_fast_png_is_a_valid_palette_png() -> None:
    """The hand-written PNG: signature, chunks with correct CRCs in the order IHDR, PLTE, IDAT,
    IEND, an 8-bit indexed image with 256 palette entries (index 255 grey), which PIL verifies
    and decodes; also for a single cell and an all-NaN grid."""
    import io
    import struct
    import zlib

    from PIL import Image

    from losslab.callbacks.heatmap import fast_png

    for data in (np.array([[0.5]]), np.full((3, 5), np.nan), np.arange(12.0).reshape(3, 4)):
        png, height, width = fast_png(data, cell_height=2, width=20)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        kinds, at = [], 8
        while at < len(png):
            (length,) = struct.unpack(">I", png[at:at + 4])
            kind, payload = png[at + 4:at + 8], png[at + 8:at + 8 + length]
            (crc,) = struct.unpack(">I", png[at + 8 + length:at + 12 + length])
            assert crc == zlib.crc32(kind + payload)
            kinds.append(kind)
            at += 12 + length
        assert kinds == [b"IHDR", b"PLTE", b"IDAT", b"IEND"]
        Image.open(io.BytesIO(png)).verify()
        image = Image.open(io.BytesIO(png))
        columns = data.shape[1] * (20 // data.shape[1])  # each cell 20 // columns pixels wide
        assert image.mode == "P" and image.size == (width, height) == (columns, 2 * len(data))
        palette = image.getpalette()
        assert len(palette) == 3 * 256 and palette[-3:] == [128, 128, 128]
        pixels = np.asarray(image)
        if np.isnan(data).all():
            assert (pixels == 255).all()
        else:
            assert pixels.max() <= 254
