"""Parameter groups: no weight decay for biases and norms, per-module learning-rate scales.

`build_param_groups(model, weight_decay=0.01, no_decay=("bias", "norm"), lr_scales={"head.*": 10})`
returns torch-style param-group dicts, one per distinct (weight decay, lr scale) pair:

    {"params": [...], "param_names": [...], "weight_decay": 0.01, "lr_scale": 10.0, "lr": 3e-2}

* A parameter gets **no weight decay** when it is 0- or 1-dimensional (biases, norm gains), when
  it belongs to a normalisation module (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm,
  LocalResponseNorm), or when its name matches a `no_decay` pattern (a glob when the pattern
  holds `*?[`, otherwise a case-insensitive substring of the dotted name).
* **Learning-rate scales** are fnmatch globs on the dotted parameter name; the first matching
  glob wins. The scale is stored as `lr_scale` and, when `base_lr` is given, applied to the
  group's `lr` (`lr = base_lr * scale`). Without `base_lr`, the optimizer factories in
  `losslab.optim.optimizers` fill `lr = lr * lr_scale` in. Because the scale lives in the
  group's own `lr`, every scheduler (which multiplies each group's initial lr) respects it;
  OneCycle gets a per-group `max_lr`.
* Frozen parameters (`requires_grad=False`) are left out.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from losslab.errors import UserError, did_you_mean

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*d, InstanceNorm*d, SyncBatchNorm
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())

_GLOB_CHARS = set("*?[")


def _matches(name: str, pattern: str) -> bool:
    if _GLOB_CHARS & set(pattern):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern.lower() in name.lower()


def _norm_param_names(model: nn.Module) -> set[str]:
    names = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, NORM_TYPES):
            for p_name, _ in mod.named_parameters(recurse=False):
                names.add(f"{mod_name}.{p_name}" if mod_name else p_name)
    return names


def build_param_groups(
    model: nn.Module,
    weight_decay: float = 0.01,
    no_decay: Iterable[str] | None = ("bias", "norm"),
    lr_scales: Mapping[str, float] | None = None,
    base_lr: float | None = None,
) -> list[dict[str, Any]]:
    """Split `model`'s trainable parameters into groups; see the module docstring."""
    weight_decay = float(weight_decay or 0.0)
    if weight_decay < 0:
        raise UserError(f"optimizer: 'weight_decay' must be >= 0, got {weight_decay!r}.")
    if isinstance(no_decay, str):
        no_decay = (no_decay,)
    no_decay = tuple(str(p) for p in (no_decay or ()))
    scales = {str(k): float(v) for k, v in dict(lr_scales or {}).items()}
    for pattern, scale in scales.items():
        if not scale > 0:
            raise UserError(
                f"optimizer: 'lr_scales[{pattern!r}]' must be > 0, got {scale!r} "
                "(freeze parameters with requires_grad=False instead of scaling to 0)."
            )

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise UserError("optimizer: the model has no trainable parameters.")
    all_names = [n for n, _ in model.named_parameters()]
    for pattern in scales:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in all_names):
            prefixes = sorted({".".join(n.split(".")[:i]) + ".*" for n in all_names
                               for i in range(1, n.count(".") + 1)})
            shown = ", ".join(all_names[:6]) + (", ..." if len(all_names) > 6 else "")
            raise UserError(
                f"optimizer: 'lr_scales' pattern {pattern!r} matches no parameter "
                f"(parameter names look like: {shown})."
                + did_you_mean(pattern, prefixes + all_names)
            )

    norm_names = _norm_param_names(model)
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, p in named:
        decays = not (p.ndim <= 1 or name in norm_names or any(_matches(name, q) for q in no_decay))
        scale = next((s for pat, s in scales.items() if fnmatch.fnmatchcase(name, pat)), 1.0)
        key = (weight_decay if decays else 0.0, scale)
        if key not in groups:
            group: dict[str, Any] = {
                "params": [],
                "param_names": [],
                "weight_decay": key[0],
                "lr_scale": scale,
            }
            if base_lr is not None:
                group["lr"] = float(base_lr) * scale
            groups[key] = group
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def describe_param_groups(groups: Iterable[Mapping[str, Any]]) -> str:
    """A short human-readable table of parameter groups (for logging once at start).

    Accepts the output of `build_param_groups` or an optimizer's `param_groups`.
    """
    lines = []
    total = 0
    for i, g in enumerate(groups):
        params = list(g["params"])
        n = sum(int(p.numel()) for p in params if isinstance(p, torch.Tensor))
        total += n
        names = list(g.get("param_names", []))
        shown = ", ".join(names[:4]) + (f", ... (+{len(names) - 4})" if len(names) > 4 else "")
        lr = g.get("lr")
        lr_txt = "default" if lr is None else f"{float(lr):.3g}"
        lines.append(
            f"  group {i}: {len(params)} tensors, {n:,} params, lr={lr_txt} "
            f"(scale {float(g.get('lr_scale', 1.0)):g}), "
            f"weight_decay={float(g.get('weight_decay', 0.0)):g}"
            + (f": {shown}" if shown else "")
        )
    return f"parameter groups ({total:,} trainable params):\n" + "\n".join(lines)
