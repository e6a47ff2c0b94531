"""Losses built from other losses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from losslab.errors import UserError, did_you_mean
from losslab.losses.base import LOSSES, Loss, check_number

TERM_KEYS = ("name", "weight", "params")


@LOSSES.register("combo", aliases=("weighted_sum",))
class ComboLoss(Loss):
    """Weighted sum of registry losses, per sample: l_i = sum_k w_k l_i^(k).

    terms: [{"name": "ce", "weight": 1.0, "params": {...}}, {"name": "focal", "weight": 0.5}];
    weight defaults to 1 and must be >= 0, params go to LOSSES.build (each term is built with
    reduction='none'; this wrapper reduces the sum). Gradient: sum_k w_k dl^(k)/dpred.
    All terms must have the same kind (and agree on output units), which the combo then takes.
    Use it to mix a robust and a calibrated loss, or a hard-label CE with a distillation term.
    """

    def __init__(self, terms: Iterable[Mapping[str, Any]], reduction: str = "mean") -> None:
        super().__init__(reduction)
        name = self.display_name
        if isinstance(terms, (str, bytes, Mapping)) or not isinstance(terms, Iterable):
            raise UserError(f"{name}: 'terms' must be a list of {{name, weight, params}}, "
                            f"got {terms!r}.")
        terms = list(terms)
        if not terms:
            raise UserError(f"{name}: 'terms' must list at least one loss.")
        self.losses = nn.ModuleList()
        self.weights: list[float] = []
        for i, term in enumerate(terms):
            loss, weight = self._build_term(f"{name} term {i}", term)
            self.losses.append(loss)
            self.weights.append(weight)
        kinds = sorted({loss.kind for loss in self.losses})
        if len(kinds) > 1:
            described = ", ".join(f"{type(t).registry_name} ({t.kind})" for t in self.losses)
            raise UserError(f"{name}: all terms must have the same kind, got {described}.")
        units = {loss.outputs_per_sample for loss in self.losses}
        if len(units) > 1:
            raise UserError(f"{name}: terms need different numbers of outputs per sample "
                            f"({sorted(units, key=str)}); they cannot share one prediction.")
        # instance values shadow the class-level ClassVars
        self.kind = kinds[0]  # type: ignore[misc]
        single = all(t.accepts_single_logit for t in self.losses)
        self.accepts_single_logit = single  # type: ignore[misc]
        self.binary_only = any(t.binary_only for t in self.losses)  # type: ignore[misc]
        self.outputs_per_sample = units.pop()

    @staticmethod
    def _build_term(owner: str, term: object) -> tuple[Loss, float]:
        if not isinstance(term, Mapping):
            raise UserError(f"{owner}: must be a mapping with keys {', '.join(TERM_KEYS)}, "
                            f"got {term!r}.")
        for key in term:
            if key not in TERM_KEYS:
                raise UserError(f"{owner}: unknown key '{key}'. Allowed: {', '.join(TERM_KEYS)}."
                                + did_you_mean(str(key), TERM_KEYS))
        if "name" not in term:
            raise UserError(f"{owner}: missing 'name' (a registered loss).")
        weight = check_number(owner, "weight", term.get("weight", 1.0), low=0)
        params = term.get("params") or {}
        if not isinstance(params, Mapping):
            raise UserError(f"{owner}: 'params' must be a mapping, got {params!r}.")
        params = dict(params)
        if "reduction" in params:
            raise UserError(f"{owner}: do not set 'reduction' in params; the combo reduces.")
        return LOSSES.build(str(term["name"]), reduction="none", **params), weight

    def check_shapes(self, pred: Tensor, target: Tensor) -> None:
        for loss in self.losses:
            loss.check_shapes(pred, target)
            loss._shapes_checked = True

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        out = None
        for loss, weight in zip(self.losses, self.weights, strict=True):
            value = loss(pred, target)
            out = value * weight if out is None else torch.add(out, value, alpha=weight)
        return out

    def extra_repr(self) -> str:
        return f"weights={self.weights}, reduction={self.reduction!r}"
