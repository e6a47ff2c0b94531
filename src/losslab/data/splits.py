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


def kfold_indices(pool: np.ndarray, num_folds: int, fold: int, seed: int
                  ) -> dict[str, np.ndarray]:
    """Fold `fold` of a seeded k-fold split of the index array `pool`: {'train', 'val'}.

    The pool is shuffled with `seed` and cut into `num_folds` near-equal folds; fold `fold` is
    the validation split and the other folds are the training split. The same seed gives the
    same folds, so `data.fold=0..k-1` runs see disjoint validation splits covering the pool.
    """
    check_folds(num_folds, fold)
    if len(pool) < num_folds:
        raise UserError(f"data: {len(pool)} train+val samples cannot make {num_folds} folds.")
    shuffled = np.sort(pool)[np.random.default_rng(seed).permutation(len(pool))]
    folds = np.array_split(shuffled, num_folds)
    return {"train": np.concatenate([f for i, f in enumerate(folds) if i != fold]),
            "val": folds[fold]}


def check_folds(num_folds: int | None, fold: int) -> None:
    """`num_folds` is null or an integer >= 2, and `fold` indexes one of the folds."""
    if num_folds is None:
        return
    if isinstance(num_folds, bool) or not isinstance(num_folds, int) or num_folds < 2:
        raise UserError(f"data: 'num_folds' must be an integer >= 2 (or null), got "
                        f"{num_folds!r}.")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < num_folds:
        raise UserError(f"data: 'fold' must be an integer in [0, {num_folds - 1}] for "
                        f"num_folds={num_folds}, got {fold!r}.")
