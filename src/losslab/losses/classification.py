"""Classification losses on logits: binary [N] / [N, 1] or multi-class [N, C]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from losslab.errors import UserError
from losslab.losses.base import (
    LOSSES,
    Loss,
    as_vector,
    check_number,
    float_list,
    label_range_error,
)
from losslab.losses.functional import focal_binary, focal_multiclass

MULTI = "logits [N, C] (C >= 2) and integer labels [N]"


def check_multiclass(loss: Loss, pred: Tensor, target: Tensor, probs: bool = True) -> None:
    """Logits [N, C], C >= 2, with labels [N] in [0, C) or (if `probs`) probabilities [N, C]."""
    expected = MULTI + (" or probabilities [N, C]" if probs else "")
    if pred.dim() != 2 or pred.shape[1] < 2:
        hint = ""
        if loss.accepts_single_logit is False and as_vector(pred).dim() == 1:
            hint = " (for one logit per sample use 'bce' or 'focal')"
        raise loss.shape_error(pred, target, expected + hint)
    if target.dim() == 1 and target.shape[0] == pred.shape[0]:
        err = label_range_error(loss, pred, target, pred.shape[1])
        if err is not None:
            raise err
        return
    if probs and target.shape == pred.shape and target.is_floating_point():
        if target.numel() and (
            bool((target < 0).any()) or not torch.allclose(
                target.sum(1), torch.ones((), dtype=target.dtype), atol=1e-3)
        ):
            raise loss.shape_error(pred, target, "probability rows (>= 0, summing to 1)")
        return
    raise loss.shape_error(pred, target, expected)


def check_binary(loss: Loss, pred: Tensor, target: Tensor, values: str = "[0, 1]") -> None:
    """One logit per sample ([N] or [N, 1]) and one target per sample."""
    p = as_vector(pred)
    if p.dim() != 1 or as_vector(target).shape != p.shape:
        hint = " (for [N, C] logits use 'ce')" if pred.dim() == 2 else ""
        raise loss.shape_error(pred, target, f"logits [N] or [N, 1] and targets [N] in {values}"
                               + hint)


def labels_long(target: Tensor) -> Tensor:
    return target if target.dtype == torch.long else target.long()


@LOSSES.register("bce", aliases=("binary_cross_entropy", "log_loss"))
class BCELoss(Loss):
    """Binary cross-entropy on logits z, p = sigmoid(z): l = -[w_p y log p + (1 - y) log(1 - p)].

    Targets are {0, 1} labels or soft targets in [0, 1]. Computed by torch in log-sigmoid form, so
    logits of +-100 stay finite; dl/dz = p - y for w_p = 1 (and (w_p y + 1 - y) p - w_p y in
    general). `pos_weight` w_p > 1 up-weights positives (e.g. n_negative / n_positive).
    The loss for binary data with one output unit. Equals torch's binary_cross_entropy_with_logits.
    """

    kind = "classification"
    accepts_single_logit = True
    binary_only = True

    def __init__(self, pos_weight: float | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if pos_weight is not None:
            pos_weight = check_number(self.display_name, "pos_weight", pos_weight, low=0,
                                      low_inclusive=False)
            self.register_buffer("pos_weight", torch.tensor(pos_weight), persistent=False)
        else:
            self.pos_weight = None

    def check_shapes(self, pred: Tensor, target: Tensor) -> None:
        check_binary(self, pred, target)
        if target.numel() and not bool(((target >= 0) & (target <= 1)).all()):
            raise self.shape_error(pred, target, "targets in [0, 1] (labels {0, 1} or soft)")

    def _inputs(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        z = as_vector(pred)
        pw = self.pos_weight
        if pw is not None:
            pw = pw.to(device=z.device, dtype=z.dtype)
        return z, as_vector(target).to(z.dtype), pw

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        z, y, pw = self._inputs(pred, target)
        return F.binary_cross_entropy_with_logits(z, y, pos_weight=pw, reduction="none")

    def reduced(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        z, y, pw = self._inputs(pred, target)
        return F.binary_cross_entropy_with_logits(z, y, pos_weight=pw, reduction=reduction)


@LOSSES.register("ce", aliases=("cross_entropy", "categorical_cross_entropy"))
class CrossEntropyLoss(Loss):
    """Softmax cross-entropy: l = -sum_c w_c q_c log p_c - beta H(p), p = softmax(z / T).

    q is one-hot (integer labels [N]) or given probabilities [N, C], label-smoothed to
    (1 - eps) q + eps / C. Gradient dl/dz = (p - q) / T (no weights, beta = 0). The default
    multi-class loss; binary data need two output units.

    - class_weights w: per-class factors. With reduction='mean' the result is the plain mean of the
      weighted per-sample losses (torch divides by sum_i w_{y_i} instead).
    - temperature T > 0 divides the logits (T > 1 softens p, shrinking gradients by 1 / T).
    - confidence_penalty beta >= 0 (Pereyra et al. 2017) SUBTRACTS beta H(p), so minimising the
      loss RAISES the entropy of the prediction and penalises over-confidence. The course notes
      write "+ beta H(p)", which has the sign wrong: that would reward confident predictions.
    """

    kind = "classification"

    def __init__(
        self,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        temperature: float = 1.0,
        confidence_penalty: float = 0.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        name = self.display_name
        self.label_smoothing = check_number(name, "label_smoothing", label_smoothing, low=0,
                                            high=1, high_inclusive=False)
        self.temperature = check_number(name, "temperature", temperature, low=0,
                                        low_inclusive=False)
        self.confidence_penalty = check_number(name, "confidence_penalty", confidence_penalty,
                                               low=0)
        w = None
        if class_weights is not None:
            weights = float_list(name, "class_weights", class_weights)
            for v in weights:
                check_number(name, "class_weights", v, low=0)
            w = torch.tensor(weights)
        self.register_buffer("class_weights", w, persistent=False)

    def check_shapes(self, pred: Tensor, target: Tensor) -> None:
        check_multiclass(self, pred, target)
        if self.class_weights is not None and self.class_weights.numel() != pred.shape[1]:
            raise self.shape_error(
                pred, target, f"{self.class_weights.numel()} classes (len(class_weights))"
            )

    def _inputs(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        z = pred / self.temperature if self.temperature != 1.0 else pred
        t = labels_long(target) if target.dim() == 1 else target.to(z.dtype)
        w = self.class_weights
        if w is not None:
            w = w.to(device=z.device, dtype=z.dtype)
        return z, t, w

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        z, t, w = self._inputs(pred, target)
        if not self.confidence_penalty:
            return F.cross_entropy(z, t, weight=w, reduction="none",
                                   label_smoothing=self.label_smoothing)
        logp = F.log_softmax(z, dim=-1)  # cross_entropy(logp) == cross_entropy(z)
        loss = F.cross_entropy(logp, t, weight=w, reduction="none",
                               label_smoothing=self.label_smoothing)
        entropy = -(logp.exp() * logp).sum(-1)
        return loss - self.confidence_penalty * entropy

    def reduced(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        if self.confidence_penalty:
            return super().reduced(pred, target, reduction)
        z, t, w = self._inputs(pred, target)
        if w is None or reduction == "sum":
            return F.cross_entropy(z, t, weight=w, reduction=reduction,
                                   label_smoothing=self.label_smoothing)
        total = F.cross_entropy(z, t, weight=w, reduction="sum",
                                label_smoothing=self.label_smoothing)
        return total / z.shape[0]


@LOSSES.register("focal", aliases=("focal_loss",))
class FocalLoss(Loss):
    """Focal loss (Lin et al. 2017): FL = -alpha_t (1 - p_t)^gamma log p_t.

    Binary (sigmoid) for logits [N] / [N, 1], targets {0, 1} or soft in [0, 1]: p = sigmoid(z),
    p_t = p y + (1 - p)(1 - y), alpha_t = alpha y + (1 - alpha)(1 - y) -- torchvision's
    sigmoid_focal_loss. Multi-class (softmax) for logits [N, C] with integer labels y:
    FL = -alpha_y (1 - p_y)^gamma log p_y.

    gamma >= 0 down-weights easy examples (p_t -> 1), for class imbalance / dense detection.
    alpha: None (no weighting), a number in [0, 1] (binary: weight of positives, 1 - alpha for
    negatives; multi-class: a constant factor, as in kornia), or a per-class list (length C;
    binary: [negative, positive]). gamma = 0 with alpha = None is exactly bce / ce.

    Gradient (binary, hard labels, v = (1 - 2y) z): dFL/dz = (1 - 2y) alpha_t q^gamma
    (q + gamma p_t softplus(v)) with q = 1 - p_t; multi-class: dFL/dz_c = k (p_c - [c = y]),
    k = alpha_y (q^gamma - gamma q^(gamma - 1) p_y log p_y). Both are written so no q^(gamma - 1)
    is evaluated at q = 0: finite at logits of +-100 even for gamma in (0, 1), where the naive
    (1 - p_t) ** gamma has an infinite derivative. On CPU (float32/64) the loss and its gradient
    come from one fused C kernel (losslab/native/focal.c, built on first use); elsewhere, or
    without a C compiler, from hand-written torch Functions (see functional.py).
    """

    kind = "classification"
    accepts_single_logit = True

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | list[float] | None = 0.25,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        name = self.display_name
        self.gamma = check_number(name, "gamma", gamma, low=0)
        self.alpha: float | list[float] | None
        if alpha is None:
            self.alpha = None
        elif isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
            self.alpha = check_number(name, "alpha", alpha, low=0, high=1)
        else:
            self.alpha = float_list(name, "alpha", alpha)
            for a in self.alpha:
                check_number(name, "alpha", a, low=0)
        alpha_t = None if self.alpha is None else torch.tensor(self.alpha)
        self.register_buffer("alpha_t", alpha_t, persistent=False)

    def check_shapes(self, pred: Tensor, target: Tensor) -> None:
        per_class = isinstance(self.alpha, list)
        if as_vector(pred).dim() == 1:
            check_binary(self, pred, target)
            if target.numel() and not bool(((target >= 0) & (target <= 1)).all()):
                raise self.shape_error(pred, target, "targets in [0, 1] (labels {0, 1} or soft)")
            if per_class and len(self.alpha) != 2:
                raise UserError(
                    f"{self.display_name}: 'alpha' has {len(self.alpha)} entries but the logits "
                    f"{tuple(pred.shape)} are binary; give a number or [negative, positive]."
                )
            return
        check_multiclass(self, pred, target, probs=False)
        if per_class and len(self.alpha) != pred.shape[1]:
            raise UserError(
                f"{self.display_name}: 'alpha' has {len(self.alpha)} entries but the logits "
                f"{tuple(pred.shape)} have {pred.shape[1]} classes."
            )

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        return self._focal(pred, target, "none")

    def reduced(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        return self._focal(pred, target, reduction)

    def _focal(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        z = as_vector(pred)
        if z.dim() == 1:
            y = as_vector(target)
            if self.alpha is None and not self.gamma:
                return F.binary_cross_entropy_with_logits(z, y.to(z.dtype), reduction=reduction)
            if self.alpha is None:
                a_neg = a_pos = None
            elif isinstance(self.alpha, list):
                a_neg, a_pos = self.alpha
            else:
                a_neg, a_pos = 1.0 - self.alpha, self.alpha
            return focal_binary(z, y, self.gamma, a_neg, a_pos, reduction)
        y = labels_long(target)
        if self.alpha is None and not self.gamma:
            return F.cross_entropy(z, y, reduction=reduction)
        alpha = self.alpha_t
        if alpha is not None:
            alpha = alpha.to(device=z.device, dtype=z.dtype)
        return focal_multiclass(z, y, self.gamma, alpha, reduction)


@LOSSES.register("hinge", aliases=("multi_margin", "svm"))
class HingeLoss(Loss):
    """Hinge (SVM) loss on raw scores.

    Binary, scores f [N] / [N, 1] with labels {0, 1} or {-1, +1} (0 is read as -1):
    l = max(0, margin - y f); gradient -y where the margin is violated, else 0.
    Multi-class Weston-Watkins, scores [N, C] with integer labels y:
    l = sum_{c != y} max(0, margin - f_y + f_c) / C -- torch's multi_margin_loss (which divides
    by C). `squared` squares each hinge term (L2-SVM: smooth, gradient 2 max(0, .)).
    Sparse gradients (zero once a sample clears the margin); margin >= 0.
    """

    kind = "classification"
    accepts_single_logit = True

    def __init__(self, margin: float = 1.0, squared: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = check_number(self.display_name, "margin", margin, low=0)
        self.squared = bool(squared)

    def check_shapes(self, pred: Tensor, target: Tensor) -> None:
        if as_vector(pred).dim() != 1:
            check_multiclass(self, pred, target, probs=False)
            return
        check_binary(self, pred, target, values="{0, 1} or {-1, +1}")
        if target.numel():
            values = set(torch.unique(target).tolist())
            if not values <= {-1, 0, 1} or {-1, 0} <= values:
                raise self.shape_error(
                    pred, target, f"labels {{0, 1}} or {{-1, +1}} (got values {sorted(values)})")

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        z = as_vector(pred)
        if z.dim() == 2:
            return F.multi_margin_loss(z, labels_long(target), p=2 if self.squared else 1,
                                       margin=self.margin, reduction="none")
        y = as_vector(target).to(z.dtype).mul(2.0).sub_(1.0).sign_()  # {0, 1} or {-1, 1} -> +-1
        h = torch.relu(torch.addcmul(torch.full_like(z, self.margin), y, z, value=-1.0))
        return h.square() if self.squared else h

    def reduced(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        if pred.dim() == 2 and pred.shape[1] > 1:
            return F.multi_margin_loss(pred, labels_long(target), p=2 if self.squared else 1,
                                       margin=self.margin, reduction=reduction)
        return super().reduced(pred, target, reduction)


@LOSSES.register("kl", aliases=("kl_div", "kl_divergence", "distillation"))
class KLDivLoss(Loss):
    """KL divergence KL(q || p) = sum_c q_c (log q_c - log p_c), p = softmax(z / T).

    Target q: probabilities [N, C] (rows sum to 1), integer labels [N] (one-hot: KL = CE), or,
    with `target_is_logits`, teacher logits [N, C] softened the same way (q = softmax(t / T)).
    Per-sample values sum over classes, so reduction='mean' equals torch's kl_div 'batchmean'.
    Gradient dl/dz = (p - q) / T, times the factor below.

    Temperature convention: with `scale_t2` (default) the loss is multiplied by T^2, as in Hinton,
    Vinyals & Dean (2015), so the gradient's magnitude stays roughly independent of T and the
    distillation term can be mixed with a hard-label CE without retuning weights when T changes.
    At T = 1 the factor is 1 and the loss is exactly torch's kl_div (batchmean).
    """

    kind = "classification"

    def __init__(self, temperature: float = 1.0, scale_t2: bool = True,
                 target_is_logits: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.temperature = check_number(self.display_name, "temperature", temperature, low=0,
                                        low_inclusive=False)
        self.scale_t2 = bool(scale_t2)
        self.target_is_logits = bool(target_is_logits)
        self.factor = self.temperature**2 if self.scale_t2 else 1.0

    def check_shapes(self, pred: Tensor, target: Tensor) -> None:
        if self.target_is_logits:
            if pred.dim() != 2 or pred.shape[1] < 2 or target.shape != pred.shape:
                raise self.shape_error(pred, target, "student and teacher logits [N, C], C >= 2")
            return
        check_multiclass(self, pred, target)

    def _inputs(self, pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        t = self.temperature
        logp = F.log_softmax(pred / t if t != 1.0 else pred, dim=-1)
        if self.target_is_logits:
            q = F.softmax(target.to(pred.dtype) / t, dim=-1)
        elif target.dim() == 1:
            q = F.one_hot(labels_long(target), pred.shape[1]).to(pred.dtype)
        else:
            q = target.to(pred.dtype)
        return logp, q

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        logp, q = self._inputs(pred, target)
        loss = F.kl_div(logp, q, reduction="none").sum(-1)
        return loss * self.factor if self.factor != 1.0 else loss

    def reduced(self, pred: Tensor, target: Tensor, reduction: str) -> Tensor:
        logp, q = self._inputs(pred, target)
        red = "batchmean" if reduction == "mean" else "sum"
        loss = F.kl_div(logp, q, reduction=red)
        return loss * self.factor if self.factor != 1.0 else loss
