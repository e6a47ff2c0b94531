"""torchmetrics collections per task kind; outputs are turned into what each metric expects."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import (
    MaxMetric,
    MeanAbsoluteError,
    MeanMetric,
    MeanSquaredError,
    MetricCollection,
    MinMetric,
    R2Score,
)
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryCalibrationError,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassF1Score,
)


def eval_loss_metric() -> MeanMetric:
    """The mean evaluation loss over an epoch's batches: NaN if any batch's loss is NaN (no
    check per batch, so no host sync; torchmetrics' default would drop NaN values with a
    warning and report the mean of the rest)."""
    return MeanMetric(nan_strategy="disable")


def best_metric(mode: str) -> MaxMetric | MinMetric:
    """The best monitored value so far (max or min); epochs whose value is NaN are skipped."""
    return MaxMetric(nan_strategy="ignore") if mode == "max" else MinMetric(nan_strategy="ignore")


def build_metrics(kind: str, num_classes: int | None, prefix: str) -> MetricCollection:
    """acc, f1 (macro), ece [+ auroc for binary] for classification; mae, rmse, r2 for
    regression; none for embeddings (the task computes k-NN accuracy itself)."""
    if kind == "embedding":
        return MetricCollection({"acc": MeanMetric()}, prefix=prefix)  # placeholder, unused
    if kind == "regression":
        metrics = {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
                   "r2": R2Score()}
    elif num_classes == 2:
        metrics = {"acc": BinaryAccuracy(), "f1": BinaryF1Score(), "auroc": BinaryAUROC(),
                   "ece": BinaryCalibrationError(n_bins=15)}
    else:
        assert num_classes is not None
        metrics = {"acc": MulticlassAccuracy(num_classes, average="micro"),
                   "f1": MulticlassF1Score(num_classes, average="macro"),
                   "ece": MulticlassCalibrationError(num_classes, n_bins=15)}
    return MetricCollection(metrics, prefix=prefix)


def metric_inputs(kind: str, num_classes: int | None, out: Tensor) -> Tensor:
    """Model outputs -> metric inputs: probabilities (classification) or values (regression)."""
    if kind == "regression":
        return out.squeeze(-1) if out.dim() == 2 else out
    if num_classes == 2:
        if out.dim() == 1 or out.shape[-1] == 1:
            return torch.sigmoid(out.reshape(-1))
        return torch.softmax(out, dim=-1)[:, 1]
    return torch.softmax(out, dim=-1)
