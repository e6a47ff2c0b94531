"""The throttled rich progress bar: redraws on the first, every n-th and the last batch."""

from __future__ import annotations

from typing import Any

import pytest

from losslab.callbacks.progress import ThrottledRichProgressBar, due


def test_due_every_n_and_on_the_last_batch() -> None:
    assert [i for i in range(23) if due(i, 23, 10)] == [0, 9, 19, 22]
    assert [i for i in range(5) if due(i, float("inf"), 2)] == [0, 1, 3]
    assert all(due(i, 7, 1) for i in range(7))


def test_the_bar_forwards_only_due_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.callbacks import RichProgressBar

    seen: list[int] = []

    def record(self: Any, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
               batch_idx: int) -> None:
        seen.append(batch_idx)

    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", record)
    monkeypatch.setattr(ThrottledRichProgressBar, "total_train_batches", 12)
    bar = ThrottledRichProgressBar(refresh_rate=5)
    for i in range(12):
        bar.on_train_batch_end(None, None, None, None, i)  # type: ignore[arg-type]
    assert seen == [0, 4, 9, 11]


def test_refresh_rate_zero_turns_the_bar_off() -> None:
    """As with Lightning's bar: no division by zero, nothing drawn."""
    assert due(3, 10, 0) and due(3, 10, 1)
    bar = ThrottledRichProgressBar(refresh_rate=0)
    assert bar.is_disabled
    bar.on_train_batch_end(None, None, None, None, 3)  # type: ignore[arg-type]
