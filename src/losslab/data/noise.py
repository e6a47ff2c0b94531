"""Symmetric label noise for the training split (curriculum / robust-loss experiments)."""

from __future__ import annotations

import numpy as np
import torch

Split = tuple[np.ndarray, np.ndarray]

# Mixed into the data seed so the noise draw does not reuse the split permutation's stream.
NOISE_STREAM = 0x5EED


def symmetric_label_noise(y: np.ndarray, fraction: float, num_classes: int,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Replace round(fraction * N) labels, chosen uniformly without replacement, by a uniformly
    random *other* class: y' = (y + U{1, ..., C-1}) mod C. Returns (noisy labels, flipped mask).

    Every chosen label changes, so the noise rate is exactly `fraction` (symmetric noise, with a
    transition matrix of 1 - fraction on the diagonal and fraction / (C - 1) elsewhere).
    """
    rng = np.random.default_rng((int(seed), NOISE_STREAM))
    n = len(y)
    k = int(round(fraction * n))
    flipped = np.zeros(n, dtype=bool)
    out = np.array(y, copy=True)
    if k == 0 or num_classes < 2:
        return out, flipped
    where = rng.choice(n, size=k, replace=False)
    offset = rng.integers(1, num_classes, size=k)
    out[where] = (out[where].astype(np.int64) + offset) % num_classes
    flipped[where] = True
    return out, flipped


def apply_label_noise(raw: dict[str, Split], fraction: float,
                      seed: int) -> tuple[dict[str, Split], torch.Tensor | None]:
    """Noisy labels in raw['train'] only (val/test stay clean) and the flipped mask as a bool
    tensor over the training split (None when fraction is 0)."""
    if not fraction:
        return raw, None
    num_classes = int(max(int(b.max()) for _, b in raw.values() if len(b)) + 1)
    x, y = raw["train"]
    noisy, flipped = symmetric_label_noise(y, fraction, num_classes, seed)
    return {**raw, "train": (x, noisy)}, torch.as_tensor(flipped)
