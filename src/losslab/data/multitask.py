"""Multi-task data sets: one input, several targets (columns of a float [N, K] target tensor).

Batches keep the (x, y, idx) 3-tuple of every losslab data set; `y[:, k]` is task k's target
(class labels stored as floats; the multi-task LightningModule casts them). Each module declares
its tasks as `TaskSpec`s (name, kind, classes); the loss of each task is configured in the data
yaml under `losses:` (one entry per task name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from losslab.data.base import DATASETS, ArrayDataModule
from losslab.errors import UserError, check_range


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task set: its target column, kind and number of classes."""

    name: str
    kind: str                 # "regression" | "classification"
    num_classes: int | None = None


class MultiTaskDataModule(ArrayDataModule):
    """Base: `load()` returns x and y [N, K]; `task_specs()` names the K columns.

    Regression columns listed in `standardize_tasks` are standardised with train-split
    statistics after the split; the others stay in their original units.
    """

    kind = "regression"       # float targets through the base class; tasks carry the real kinds
    multitask: ClassVar[bool] = True
    standardize_tasks: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **kwargs) -> None:
        if kwargs.get("standardize_target"):
            raise UserError(f"data '{self.registry_name}': 'standardize_target' does not apply "
                            "to multi-task sets (each task decides; see the README's "
                            "Multi-task section).")
        kwargs.pop("standardize_target", None)
        super().__init__(**kwargs)

    def task_specs(self) -> list[TaskSpec]:
        raise NotImplementedError

    @property
    def tasks(self) -> list[TaskSpec]:
        return self.task_specs()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        super().setup(stage)
        names = [t.name for t in self.tasks]
        cols = [names.index(n) for n in self.standardize_tasks]
        if cols:
            y = self.splits["train"][1][:, cols]
            mean, std = y.mean(0), y.std(0).clamp_min(1e-8)
            for split, (x, yy) in self.splits.items():
                yy = yy.clone()
                yy[:, cols] = (yy[:, cols] - mean) / std
                self.splits[split] = (x, yy)


@DATASETS.register("multitask_synthetic", aliases=("mtl_synthetic",))
class MultiTaskSynthetic(MultiTaskDataModule):
    """K regression tasks on shared x ~ N(0, I_d): y_k = f_k(x) + eps_k, eps_k ~ N(0, s_k^2),
    f_k(x) = w_k.x + 1/2 sin(u_k.x) (w_k, u_k ~ N(0, I/d)), s_k = noise_std[k]; tasks
    `reg0..reg{K-1}`. With `classification: true`, task `cls`: argmax_c (V x)_c over
    `num_classes` classes. Targets are NOT standardised, so a learned sigma_k (uncertainty
    weighting) is directly comparable with noise_std[k]."""

    def __init__(self, num_samples: int = 4000, num_features: int = 8,
                 noise_std: list[float] | tuple[float, ...] = (0.1, 1.0, 3.0),
                 classification: bool = False, num_classes: int = 3, **kwargs) -> None:
        super().__init__(**kwargs)
        owner = "data 'multitask_synthetic'"
        check_range(owner, "num_samples", num_samples, low=10)
        check_range(owner, "num_features", num_features, low=1)
        noise = list(noise_std or [])
        if not noise and not classification:
            raise UserError(f"{owner}: 'noise_std' lists one noise std per regression task; got "
                            "none and classification is off, so there is no task.")
        for i, s in enumerate(noise):
            check_range(owner, f"noise_std[{i}]", s, low=0)
        if classification:
            check_range(owner, "num_classes", num_classes, low=2)
        self.n, self.d, self.noise_std = int(num_samples), int(num_features), \
            [float(s) for s in noise]
        self.classification, self.num_classes = bool(classification), int(num_classes)

    def task_specs(self) -> list[TaskSpec]:
        specs = [TaskSpec(f"reg{k}", "regression") for k in range(len(self.noise_std))]
        if self.classification:
            specs.append(TaskSpec("cls", "classification", self.num_classes))
        return specs

    def load(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal((self.n, self.d))
        cols = []
        for s in self.noise_std:
            w, u = rng.standard_normal((2, self.d)) / np.sqrt(self.d)
            cols.append(x @ w + 0.5 * np.sin(x @ u) + s * rng.standard_normal(self.n))
        if self.classification:
            v = rng.standard_normal((self.d, self.num_classes))
            cols.append(np.argmax(x @ v, axis=1).astype(np.float64))
        return {"x": x.astype(np.float32), "y": np.stack(cols, 1).astype(np.float32)}


@DATASETS.register("multitask_digits", aliases=("mtl_digits",))
class MultiTaskDigits(MultiTaskDataModule):
    """scikit-learn's 8x8 digits with three tasks: `digit` (10 classes), `parity` (binary:
    digit odd = 1) and `ink` (regression: the image's ink mass = sum of its 64 pixel
    intensities, standardised with train-split mean and std)."""

    input_shape = (1, 8, 8)
    standardize_tasks = ("ink",)

    def task_specs(self) -> list[TaskSpec]:
        return [TaskSpec("digit", "classification", 10),
                TaskSpec("parity", "classification", 2), TaskSpec("ink", "regression")]

    def load(self) -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits

        d = load_digits()
        y = np.stack([d.target, d.target % 2, d.data.sum(1)], 1)
        return {"x": d.data.astype(np.float32), "y": y.astype(np.float32)}


def task_targets(y: torch.Tensor, tasks: list[TaskSpec]) -> list[torch.Tensor]:
    """Columns of a [N, K] target batch: long labels for classification, floats otherwise."""
    return [y[:, k].long() if t.kind == "classification" else y[:, k]
            for k, t in enumerate(tasks)]
