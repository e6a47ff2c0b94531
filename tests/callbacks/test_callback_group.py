"""CallbackGroup: one Lightning dispatch for the gradient callbacks, same order, same state."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import pytest
import torch

from losslab.builders import instantiate_group
from losslab.callbacks.grad_health import GradHealth
from losslab.callbacks.grad_monitor import GradMonitor
from losslab.callbacks.group import CallbackGroup, find_callback, group_callbacks, iter_callbacks
from losslab.run import build_trainer

calls: list[str] = []


class Recorder(L.Callback):
    groupable = True

    def __init__(self, name: str) -> None:
        self.name, self.count = name, 0

    @property
    def state_key(self) -> str:
        return f"Recorder[{self.name}]"

    def on_train_batch_end(self, *args: Any) -> None:
        calls.append(self.name)
        self.count += 1

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["count"]


class Plain(L.Callback):
    def on_train_batch_end(self, *args: Any) -> None:
        calls.append("plain")


def test_groups_consecutive_runs_only() -> None:
    a, b, c, d = Recorder("a"), Recorder("b"), Plain(), Recorder("d")
    out = group_callbacks([a, b, c, d])
    assert isinstance(out[0], CallbackGroup) and out[0].members == [a, b]
    assert out[1:] == [c, d]  # a single groupable callback stays as it is
    assert list(iter_callbacks(out)) == [a, b, c, d]


def test_group_forwards_in_order_to_overriders_only() -> None:
    calls.clear()
    group = CallbackGroup([Recorder("a"), Recorder("b")])
    assert group._by_hook["on_train_start"] == []  # nobody overrides it: nothing is called
    assert group.on_train_start is None  # ... not even the group (Lightning skips None hooks)
    group.on_train_batch_end(None, None, None, None, 0)
    assert calls == ["a", "b"]


def test_group_state_round_trips_per_member() -> None:
    a, b = Recorder("a"), Recorder("b")
    a.count, b.count = 3, 5
    state = CallbackGroup([a, b]).state_dict()
    assert state == {"Recorder[a]": {"count": 3}, "Recorder[b]": {"count": 5}}
    fresh = CallbackGroup([Recorder("a"), Recorder("b")])
    fresh.load_state_dict(state)
    assert [m.count for m in fresh.members] == [3, 5]


def test_default_run_groups_the_gradient_callbacks(make_cfg) -> None:
    cfg = make_cfg("debug=limit", "test=false")
    trainer = build_trainer(cfg, instantiate_group(cfg.callbacks, "callback"), [])
    groups = [cb for cb in trainer.callbacks if isinstance(cb, CallbackGroup)]
    assert len(groups) == 1
    names = [type(m).__name__ for m in groups[0].members]
    assert names == ["LearningRateMonitor", "GradMonitor", "GradHealth", "GradClip"]
    assert isinstance(find_callback(trainer, GradHealth), GradHealth)
    assert isinstance(find_callback(trainer, GradMonitor), GradMonitor)


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        return self.layer(batch[0]).square().mean()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_member_state_survives_a_checkpoint_resume(tmp_path) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    data = DataLoader(TensorDataset(torch.randn(12, 3)), batch_size=4)
    common = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False,
              "default_root_dir": tmp_path}
    first = [Recorder("a"), Recorder("b")]
    trainer = L.Trainer(max_epochs=1, callbacks=group_callbacks(first), **common)
    trainer.fit(Tiny(), data)
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    second = [Recorder("a"), Recorder("b")]
    resumed = L.Trainer(max_epochs=2, callbacks=group_callbacks(second), **common)
    resumed.fit(Tiny(), data, ckpt_path=ckpt)
    assert [m.count for m in second] == [6, 6]  # 3 steps restored + 3 new ones


@pytest.mark.parametrize("hook", ["on_train_batch_end", "setup", "on_exception"])
def test_group_defines_every_lightning_hook(hook: str) -> None:
    assert getattr(CallbackGroup, hook) is not getattr(L.Callback, hook)


def test_idle_hooks_are_not_dispatched() -> None:
    """GradClip with mode=none has no per-step work: the group drops it from those hooks, and
    a hook nobody needs is None on the group (Lightning calls only callable hook attributes)."""
    from losslab.callbacks.clipping import GradClip

    idle = CallbackGroup([GradHealth(), GradClip(mode="none")])
    assert idle.on_train_batch_end is None
    assert [type(m).__name__ for m in idle._by_hook["on_before_optimizer_step"]] == ["GradHealth"]
    assert idle._by_hook["setup"] and idle._by_hook["teardown"]  # still set up and torn down
    clipping = CallbackGroup([GradHealth(), GradClip(mode="norm")])
    assert [type(m).__name__ for m in clipping._by_hook["on_train_batch_end"]] == ["GradClip"]
    assert callable(clipping.on_train_batch_end)
    assert callable(idle.on_save_checkpoint)  # called directly by Lightning: always a method
