"""Deterministic splits from the seed, and standardisation fitted on train only."""

from __future__ import annotations

import numpy as np

from losslab.errors import UserError, check_range


def split_indices(n: int, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Shuffle range(n) with `seed` and cut it into named parts; the rest goes to 'train'."""
    for name, f in fractions.items():
        check_range("data", f"{name}_fraction", f, low=0, high=1, high_inclusive=False)
    if sum(fractions.values()) >= 1:
        raise UserError(f"data: split fractions {fractions} leave no training samples.")
    perm = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for name, f in fractions.items():
        k = int(round(f * n))
        out[name] = perm[start:start + k]
        start += k
    out["train"] = perm[start:]
    return out


class Standardizer:
    """z = (x - mean) / std with mean and std from the training split (std 0 -> 1)."""

    def __init__(self, x: np.ndarray) -> None:
        self.mean = x.mean(axis=0)
        std = x.std(axis=0)
        self.std = np.where(std > 0, std, 1.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std
