import numpy as np
import pytest
import torch

from losslab.data import DATASETS, InMemoryLoader
from losslab.data.base import ArrayDataModule
from losslab.data.splits import split_indices
from losslab.errors import UserError
from tests.conftest import DATA_DIR


def test_splits_are_deterministic_and_disjoint():
    a = split_indices(100, {"val": 0.2, "test": 0.1}, seed=3)
    b = split_indices(100, {"val": 0.2, "test": 0.1}, seed=3)
    c = split_indices(100, {"val": 0.2, "test": 0.1}, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["val"], c["val"])
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(100))
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (70, 20, 10)


def test_mnist1d_standard_split_and_train_only_standardisation():
    dm = DATASETS.build("mnist1d", data_dir=str(DATA_DIR), batch_size=100, seed=0)
    info = dm.info
    assert info.sizes == {"train": 3600, "val": 400, "test": 1000}
    assert info.input_shape == (1, 40) and info.num_classes == 10
    xtr = dm.splits["train"][0]
    assert torch.allclose(xtr.mean(0), torch.zeros(1, 40), atol=1e-4)
    assert torch.allclose(xtr.std(0, unbiased=False), torch.ones(1, 40), atol=1e-3)
    assert not torch.allclose(dm.splits["test"][0].mean(0), torch.zeros(1, 40), atol=1e-4)


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "diabetes", "synthetic_regression",
                                  "imbalanced"])
def test_sklearn_and_generated_sets(name):
    dm = DATASETS.build(name, batch_size=32, seed=1)
    info = dm.info
    assert min(info.sizes.values()) > 0
    x, y, idx = next(iter(dm.train_dataloader()))
    assert x.shape[1:] == info.input_shape and y.shape == (32,) and idx.shape == (32,)
    if info.kind == "classification":
        assert y.dtype == torch.long
    else:
        assert y.dtype == torch.float32


def test_imbalanced_positive_rate_and_outliers():
    dm = DATASETS.build("imbalanced", positive_rate=0.1, num_samples=2000, seed=0)
    dm.setup()
    y = torch.cat([dm.splits[k][1] for k in dm.splits])
    assert abs(y.float().mean().item() - 0.1) < 0.02
    clean = DATASETS.build("synthetic_regression", outlier_fraction=0.0, seed=0).load()["y"]
    dirty = DATASETS.build("synthetic_regression", outlier_fraction=0.1, seed=0).load()["y"]
    moved = np.abs(dirty - clean)
    assert (moved > 0).sum() == 200  # 10% of 2000, each shifted by 10 std(y)
    assert np.allclose(moved[moved > 0], 10 * clean.std(), rtol=1e-4)


def test_in_memory_loader_covers_every_sample_once_per_epoch():
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    loader = InMemoryLoader(x, y, batch_size=4, shuffle=True, seed=0)
    assert len(loader) == 3
    first = torch.cat([b[2] for b in loader])
    second = torch.cat([b[2] for b in loader])
    assert sorted(first.tolist()) == list(range(10))
    assert not torch.equal(first, second)  # reshuffled each epoch
    for xb, yb, ib in loader:
        assert torch.equal(yb, ib) and torch.equal(xb[:, 0].long(), ib)


class _Bad(ArrayDataModule):
    registry_name = "bad"

    def __init__(self, x, y, kind="classification", **kw):
        super().__init__(**kw)
        self._x, self._y = x, y
        self.kind = kind

    def load(self):
        return {"x": self._x, "y": self._y}


def test_bad_data_gets_clear_errors():
    x = np.random.default_rng(0).standard_normal((50, 3))
    x[4, 1] = np.nan
    with pytest.raises(UserError, match="NaN or Inf features"):
        _Bad(x, np.zeros(50)).setup()
    with pytest.raises(UserError, match="labels must be integers"):
        _Bad(np.ones((50, 3)), np.full(50, -1)).setup()
    with pytest.raises(UserError, match="the val split is empty"):
        _Bad(np.ones((4, 3)), np.zeros(4), val_fraction=0.1, test_fraction=0.3).setup()
    with pytest.raises(UserError, match="'batch_size' must be a positive integer"):
        _Bad(np.ones((50, 3)), np.zeros(50), batch_size=0)
    with pytest.raises(UserError, match="val_fraction"):
        _Bad(np.ones((50, 3)), np.zeros(50), val_fraction=1.5)
