"""ArrayDataModule: in-memory data sets with seeded splits, train-only standardisation,
validation of the arrays, and fast batch loading."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import lightning.pytorch as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from losslab.data.loaders import InMemoryLoader
from losslab.data.noise import apply_label_noise
from losslab.data.splits import Standardizer, check_folds, kfold_indices, split_indices
from losslab.errors import UserError, check_choice, check_range
from losslab.registry import Registry

DATASETS: Registry[ArrayDataModule] = Registry("data set")


@dataclass(frozen=True)
class DataInfo:
    """What a model and a loss need to know about the data."""

    name: str
    kind: str                    # "classification" | "regression"
    input_shape: tuple[int, ...]  # per-sample shape the models see, e.g. (1, 40) or (10,)
    num_classes: int | None      # None for regression
    sizes: dict[str, int]


class ArrayDataModule(L.LightningDataModule):
    """Base for in-memory sets. Subclasses implement `load() -> dict` of numpy arrays
    with keys x, y and optionally x_test, y_test (a predefined test split)."""

    kind: ClassVar[str] = "classification"
    input_shape: ClassVar[tuple[int, ...] | None] = None  # None: flat (num_features,)

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.15,
                 test_fraction: float = 0.15, standardize: bool = True,
                 standardize_target: bool = False, loader: str = "memory", num_workers: int = 0,
                 pin_memory: bool = False, persistent_workers: bool = False, seed: int = 42,
                 label_noise: float = 0.0, num_folds: int | None = None, fold: int = 0,
                 monitor: Any = None, name: str | None = None) -> None:
        super().__init__()
        owner = f"data '{self.registry_name}'"
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise UserError(f"{owner}: 'batch_size' must be a positive integer, "
                            f"got {batch_size!r}.")
        check_range(owner, "val_fraction", val_fraction, low=0, high=1, low_inclusive=False,
                    high_inclusive=False)
        check_range(owner, "test_fraction", test_fraction, low=0, high=1, high_inclusive=False)
        check_choice(owner, "loader", loader, ("memory", "torch"))
        check_range(owner, "num_workers", num_workers, low=0)
        check_range(owner, "label_noise", label_noise, low=0, high=1, high_inclusive=False)
        check_folds(num_folds, fold)
        self.num_folds, self.fold = num_folds, fold  # k-fold CV over train+val (val = fold)
        if label_noise and self.kind != "classification":
            raise UserError(f"{owner}: 'label_noise' flips class labels; this is a {self.kind} "
                            "set. Use label_noise=0.")
        self.label_noise = float(label_noise)
        self.noisy_train: torch.Tensor | None = None  # bool [n_train]: labels flipped by noise
        self.batch_size, self.val_fraction, self.test_fraction = batch_size, val_fraction, \
            test_fraction
        self.standardize, self.standardize_target = standardize, standardize_target
        self.loader, self.num_workers = loader, num_workers
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.seed = int(seed)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._info: DataInfo | None = None

    registry_name: ClassVar[str] = "data"

    def transfer_batch_to_device(self, batch: Any, device: torch.device,
                                 dataloader_idx: int) -> Any:
        """In-memory batches already on the device (CPU runs) are passed through as they are
        (Lightning's generic version walks the batch every step)."""
        if isinstance(batch, (tuple, list)) and all(
                isinstance(t, torch.Tensor) and t.device == device for t in batch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # -- subclasses -------------------------------------------------------------------------
    def load(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # -- building the splits ----------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        arrays = self.load()
        x, y = np.asarray(arrays["x"]), np.asarray(arrays["y"])
        if "x_test" in arrays:
            parts = split_indices(len(x), {"val": self.val_fraction}, self.seed)
            raw = {"train": (x[parts["train"]], y[parts["train"]]),
                   "val": (x[parts["val"]], y[parts["val"]]),
                   "test": (np.asarray(arrays["x_test"]), np.asarray(arrays["y_test"]))}
        else:
            parts = split_indices(len(x), {"val": self.val_fraction,
                                           "test": self.test_fraction}, self.seed)
            raw = {k: (x[v], y[v]) for k, v in parts.items()}
        if self.num_folds is not None:  # the test split stays; train+val is re-cut by fold
            pool = np.concatenate([parts["train"], parts["val"]])
            folds = kfold_indices(pool, self.num_folds, self.fold, self.seed)
            raw.update({k: (x[v], y[v]) for k, v in folds.items()})
        self._validate(raw)
        raw, self.noisy_train = apply_label_noise(raw, self.label_noise, self.seed)  # train only
        if self.standardize:
            sx = Standardizer(raw["train"][0])
            raw = {k: (sx(a), b) for k, (a, b) in raw.items()}
        if self.kind == "regression" and self.standardize_target:
            sy = Standardizer(raw["train"][1])
            raw = {k: (a, sy(b)) for k, (a, b) in raw.items()}
        shape = self.input_shape or (x.shape[1],)
        for k, (a, b) in raw.items():
            xt = torch.as_tensor(a, dtype=torch.float32).reshape(-1, *shape)
            yt = torch.as_tensor(b, dtype=torch.long if self.kind == "classification"
                                 else torch.float32)
            self.splits[k] = (xt, yt)
        num_classes = int(max(int(raw[k][1].max()) for k in raw if len(raw[k][1])) + 1) \
            if self.kind == "classification" else None
        self._info = DataInfo(self.registry_name, self.kind, tuple(shape), num_classes,
                              {k: len(v[1]) for k, v in raw.items()})

    def _validate(self, raw: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        owner = f"data '{self.registry_name}'"
        for split, (a, b) in raw.items():
            if len(b) == 0:
                raise UserError(f"{owner}: the {split} split is empty; lower the other split "
                                "fractions or use more samples.")
            if not np.isfinite(a).all():
                bad = int((~np.isfinite(a)).any(axis=tuple(range(1, a.ndim))).sum())
                raise UserError(f"{owner}: {bad} {split} samples have NaN or Inf features.")
            if not np.isfinite(b.astype(float)).all():
                raise UserError(f"{owner}: the {split} split has NaN or Inf targets.")
            if self.kind == "classification" and (b.min() < 0 or
                                                  not np.allclose(b, np.round(b))):
                raise UserError(f"{owner}: labels must be integers in [0, num_classes); the "
                                f"{split} split has labels from {b.min()} to {b.max()}.")

    @property
    def info(self) -> DataInfo:
        self.setup()
        assert self._info is not None
        return self._info

    # -- loaders ------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> Any:
        self.setup()
        x, y = self.splits[split]
        if self.loader == "memory":
            return InMemoryLoader(x, y, self.batch_size, shuffle=shuffle, seed=self.seed)
        idx = torch.arange(len(y))
        return DataLoader(TensorDataset(x, y, idx), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.persistent_workers and self.num_workers > 0)

    def train_dataloader(self) -> Any:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> Any:
        return self._loader("test", shuffle=False)
