"""The cheap step/rank reads equal Lightning's properties: through a fit, after resuming from a
checkpoint, under manual optimization, and for test doubles."""

from __future__ import annotations

from types import SimpleNamespace

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from losslab.callbacks.trainer_reads import forget, global_step, is_global_zero


class Tiny(L.LightningModule):
    def __init__(self, manual: bool = False) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.automatic_optimization = not manual

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        if not self.automatic_optimization:
            opt = self.optimizers()
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Record(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, bool]] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        forget(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append((global_step(trainer), trainer.global_step, is_global_zero(trainer)))


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(12, 3, generator=g), torch.randn(12, 1,
                                                                             generator=g)),
                      batch_size=4)


def fit(tmp_path, epochs: int, manual: bool = False, ckpt: str | None = None) -> Record:
    record = Record()
    trainer = L.Trainer(max_epochs=epochs, callbacks=[record], default_root_dir=tmp_path,
                        logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(manual), loader(), ckpt_path=ckpt)
    return record


def test_reads_equal_lightning_through_a_fit_and_a_resume(tmp_path) -> None:
    first = fit(tmp_path, 2)
    assert [s[0] for s in first.seen] == [s[1] for s in first.seen] == list(range(1, 7))
    assert all(s[2] for s in first.seen)
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    resumed = fit(tmp_path, 3, ckpt=str(ckpt))  # restores the loop counters in place
    assert [s[0] for s in resumed.seen] == [s[1] for s in resumed.seen] == [7, 8, 9]


def test_manual_optimization_counts_its_steps(tmp_path) -> None:
    record = fit(tmp_path, 1, manual=True)
    assert [s[0] for s in record.seen] == [s[1] for s in record.seen] == [1, 2, 3]


def test_test_doubles_are_read_every_time() -> None:
    double = SimpleNamespace(global_step=4, is_global_zero=False)
    assert global_step(double) == 4 and not is_global_zero(double)
    double.global_step, double.is_global_zero = 5, True
    assert global_step(double) == 5 and is_global_zero(double)


def test_the_rank_is_read_again_in_a_forked_child_and_after_pickling(tmp_path) -> None:
    import multiprocessing
    import pickle

    trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    assert is_global_zero(trainer)
    object.__setattr__(trainer, "_losslab_global_zero",  # a stale value of another process:
                       (trainer._losslab_global_zero[0], False))  # (as if cached there)
    assert not is_global_zero(trainer)  # this process's token: the cached value is used

    def child(queue) -> None:
        queue.put(is_global_zero(trainer))  # a new token after the fork: looked up again

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    process = ctx.Process(target=child, args=(queue,))
    process.start()
    process.join(30)
    assert queue.get(timeout=5) is True
    token = pickle.loads(pickle.dumps(trainer._losslab_global_zero))[0]
    assert token is not trainer._losslab_global_zero[0]  # unpickled: never this process's
