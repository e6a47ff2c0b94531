"""Gradient checking: central finite differences in float64 against autograd.

For every element x_i of a checked tensor (or a random sample of them):

    numerical  g_i = (f(x + h e_i) - f(x - h e_i)) / (2 h)        (error O(h^2) + O(eps f / h))
    relative error of a tensor = ||g_autograd - g_numerical||_2 / max(||g_autograd||_2,
                                                                       ||g_numerical||_2)

(the lessons' |a - n| / max(|a|, |n|), taken over the whole tensor so that exact zeros do not
divide 0 by 0). Verdicts: < 1e-7 excellent, < 1e-5 good, < 1e-3 acceptable, else likely bug.

Non-differentiable points (ReLU at 0, |r| at 0, a hinge at its margin) have different one-sided
slopes: right = (f(x + h) - f(x)) / h and left = (f(x) - f(x - h)) / h differ by the jump of f'.
On smooth f the gap right - left = h f''(x) + O(h^2) shrinks with h; at a kink it does not. An
element is reported as non-differentiable when its gap exceeds `1e-6 max(1, |f|)` and does not
shrink (at h / 10 it stays above half its size); such elements are left out of the relative
error, since autograd returns one subgradient (torch: 0 for relu'(0)) and the central difference
another (the average of both sides).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

THRESHOLDS = ((1e-7, "excellent"), (1e-5, "good"), (1e-3, "acceptable"))
LIKELY_BUG = "likely bug"
NON_DIFFERENTIABLE = "non-differentiable"
KINK_TOL = 1e-6
EPS = 1e-5  # ~ (3 eps_64 |f| / |f'''|)^(1/3): balances truncation h^2 and round-off eps_64 / h


def classify(rel_error: float) -> str:
    """The lessons' verdict for a relative error: excellent / good / acceptable / likely bug."""
    if rel_error != rel_error:  # NaN
        return LIKELY_BUG
    for bound, verdict in THRESHOLDS:
        if rel_error < bound:
            return verdict
    return LIKELY_BUG


def relative_error(a: Tensor, b: Tensor) -> float:
    """||a - b|| / max(||a||, ||b||); 0 when both are zero."""
    denom = max(float(a.norm()), float(b.norm()))
    diff = float((a - b).norm())
    if denom == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / denom


@dataclass
class Check:
    """The result for one tensor: which elements were compared and how well they agree."""

    group: str                     # what was checked, e.g. "focal (mean)" or "model mlp"
    name: str                      # the tensor, e.g. "pred" or "model.head.weight"
    shape: tuple[int, ...]
    checked: int                   # elements compared (kinks excluded)
    rel_error: float
    verdict: str
    kinks: list[int] = field(default_factory=list)  # flat indices of non-differentiable points
    max_abs_error: float = 0.0

    @property
    def failed(self) -> bool:
        return self.verdict == LIKELY_BUG

    @property
    def note(self) -> str:
        if not self.kinks:
            return ""
        shown = ", ".join(map(str, self.kinks[:4])) + (" ..." if len(self.kinks) > 4 else "")
        return f"non-differentiable at {len(self.kinks)} point(s) [flat index {shown}], excluded"


def _element_indices(numel: int, max_elements: int | None, generator: torch.Generator) -> Tensor:
    if max_elements is None or numel <= max_elements:
        return torch.arange(numel)
    return torch.randperm(numel, generator=generator)[:max_elements].sort().values


def autograd_gradient(fn: Callable[[], Tensor], tensor: Tensor) -> Tensor:
    """d fn() / d tensor by autograd, with only `tensor` requiring a gradient."""
    was = tensor.requires_grad
    tensor.requires_grad_(True)
    try:
        with torch.enable_grad():
            out = fn()
            if out.numel() != 1:
                raise ValueError(f"gradcheck needs a scalar function, got shape {tuple(out.shape)}")
            (grad,) = torch.autograd.grad(out, tensor, allow_unused=True)
    finally:
        tensor.requires_grad_(was)
    return torch.zeros_like(tensor) if grad is None else grad.detach()


@torch.no_grad()
def numerical_gradient(fn: Callable[[], Tensor], tensor: Tensor, indices: Tensor,
                       eps: float = EPS) -> tuple[Tensor, list[int]]:
    """Central differences at the flat `indices` of `tensor` (changed in place, then restored),
    and the indices where f has a kink (see the module docstring)."""
    flat = tensor.view(-1)
    f0 = float(fn())
    tol = KINK_TOL * max(1.0, abs(f0))
    values, kinks = [], []
    for i in indices.tolist():
        old = flat[i].item()
        shifted = {}
        for step in (eps, -eps, eps / 10, -eps / 10):
            flat[i] = old + step
            shifted[step] = float(fn())
        flat[i] = old
        values.append((shifted[eps] - shifted[-eps]) / (2 * eps))
        gap = (shifted[eps] - 2 * f0 + shifted[-eps]) / eps
        gap_small = (shifted[eps / 10] - 2 * f0 + shifted[-eps / 10]) / (eps / 10)
        if abs(gap) > tol and abs(gap_small) > 0.5 * abs(gap):
            kinks.append(i)
    return torch.tensor(values, dtype=torch.float64), kinks


def check_tensors(fn: Callable[[], Tensor], tensors: Mapping[str, Tensor], group: str = "",
                  eps: float = EPS, max_elements: int | None = None,
                  seed: int = 0) -> list[Check]:
    """Compare autograd with central differences for each tensor of `tensors`.

    `fn()` must return a scalar computed from the current values of the tensors (they are
    changed in place). Use float64 tensors: in float32 the round-off eps_32 |f| / h swamps the
    comparison. `max_elements` samples that many elements per tensor (seeded) for big tensors.
    """
    generator = torch.Generator().manual_seed(seed)
    checks = []
    for name, tensor in tensors.items():
        analytic = autograd_gradient(fn, tensor).reshape(-1).to(torch.float64)
        idx = _element_indices(tensor.numel(), max_elements, generator)
        numeric, kinks = numerical_gradient(fn, tensor, idx, eps)
        keep = torch.tensor([i not in set(kinks) for i in idx.tolist()], dtype=torch.bool)
        a, n = analytic[idx][keep], numeric[keep]
        if keep.any():
            err = relative_error(a, n)
            verdict = classify(err)
            max_abs = float((a - n).abs().max())
        else:
            err, verdict, max_abs = float("nan"), NON_DIFFERENTIABLE, 0.0
        checks.append(Check(group, name, tuple(tensor.shape), int(keep.sum()), err, verdict,
                            kinks, max_abs))
    return checks


def format_table(checks: list[Check]) -> str:
    """A fixed-width text table: group, tensor, shape, elements, relative error, verdict, note."""
    header = ("checked", "tensor", "shape", "elems", "rel. error", "verdict", "")
    rows = [header] + [
        (c.group, c.name, "x".join(map(str, c.shape)) or "scalar", str(c.checked),
         "-" if c.rel_error != c.rel_error else f"{c.rel_error:.2e}", c.verdict, c.note)
        for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True))
             + ("  " + r[-1] if r[-1] else "") for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)
