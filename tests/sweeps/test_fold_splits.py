"""k-fold cross-validation splits: disjoint folds covering the train+val pool, deterministic
from the seed, the test split unchanged, clear errors for a bad fold."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from losslab.data import DATASETS
from losslab.data.splits import kfold_indices
from losslab.errors import UserError


def test_kfold_indices_partition_the_pool():
    pool = np.arange(10, 110)
    parts = [kfold_indices(pool, 3, i, seed=0) for i in range(3)]
    vals = [p["val"] for p in parts]
    assert sorted(np.concatenate(vals).tolist()) == pool.tolist()  # folds cover, no overlap
    assert [len(v) for v in vals] == [34, 33, 33]
    for p in parts:
        assert not set(p["train"]) & set(p["val"])
        assert sorted([*p["train"], *p["val"]]) == pool.tolist()
    again = kfold_indices(pool[::-1].copy(), 3, 1, seed=0)  # pool order does not matter
    assert np.array_equal(again["val"], vals[1])
    assert not np.array_equal(kfold_indices(pool, 3, 1, seed=1)["val"], vals[1])


def _rows(x: torch.Tensor) -> Counter:
    return Counter(r.tobytes() for r in x.numpy())


def test_datamodule_folds_keep_the_test_split():
    base = DATASETS.build("digits", seed=3, standardize=False)
    base.setup()
    pool = _rows(base.splits["train"][0]) + _rows(base.splits["val"][0])
    seen: Counter = Counter()
    for fold in range(3):
        dm = DATASETS.build("digits", seed=3, standardize=False, num_folds=3, fold=fold)
        dm.setup()
        assert torch.equal(dm.splits["test"][0], base.splits["test"][0])
        train, val = _rows(dm.splits["train"][0]), _rows(dm.splits["val"][0])
        assert train + val == pool
        seen += val
    assert seen == pool  # every train+val sample is validated exactly once


@pytest.mark.parametrize(("num_folds", "fold", "match"), [
    (1, 0, "'num_folds' must be an integer >= 2"),
    (3, 3, r"'fold' must be an integer in \[0, 2\]"),
    (3, -1, r"'fold' must be an integer in \[0, 2\]"),
])
def test_bad_folds_are_user_errors(num_folds, fold, match):
    with pytest.raises(UserError, match=match):
        DATASETS.build("digits", num_folds=num_folds, fold=fold)
