"""The data sets: MNIST-1D (generated locally, cached), scikit-learn's bundled sets, and
generated regression / imbalanced-classification sets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from losslab.data.base import DATASETS, ArrayDataModule
from losslab.errors import check_choice, check_range


@DATASETS.register("mnist1d", aliases=("mnist_1d",))
class MNIST1D(ArrayDataModule):
    """MNIST-1D (Greydanus 2020): 40-point 1D digits, 10 classes; the standard 4000/1000 split,
    generated with the package's generator (no download) and cached as .npz under data_dir."""

    input_shape = (1, 40)

    def __init__(self, data_dir: str = "data", num_samples: int = 5000, val_fraction: float = 0.1,
                 **kwargs) -> None:
        super().__init__(val_fraction=val_fraction, test_fraction=0.0, **kwargs)
        self.data_dir, self.num_samples = Path(str(data_dir)), int(num_samples)

    def load(self) -> dict[str, np.ndarray]:
        path = self.data_dir / f"mnist1d_n{self.num_samples}.npz"
        if not path.exists():
            from mnist1d.data import get_dataset_args, make_dataset

            args = get_dataset_args()
            args.num_samples = self.num_samples
            data = make_dataset(args)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")  # atomic: write, rename
            with os.fdopen(fd, "wb") as f:
                np.savez(f, x=data["x"], y=data["y"], x_test=data["x_test"],
                         y_test=data["y_test"])
            os.replace(tmp, path)
        with np.load(path) as z:
            return {k: z[k] for k in ("x", "y", "x_test", "y_test")}


@DATASETS.register("digits")
class Digits(ArrayDataModule):
    """scikit-learn's 8x8 handwritten digits (1797 samples, 10 classes)."""

    input_shape = (1, 8, 8)

    def load(self) -> dict[str, np.ndarray]:
        from sklearn.datasets import load_digits

        d = load_digits()
        return {"x": d.data.astype(np.float32), "y": d.target}


@DATASETS.register("breast_cancer")
class BreastCancer(ArrayDataModule):
    """scikit-learn's Wisconsin breast cancer set (569 samples, 30 features, binary)."""

    def load(self) -> dict[str, np.ndarray]:
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer()
        return {"x": d.data.astype(np.float32), "y": d.target}


@DATASETS.register("diabetes")
class Diabetes(ArrayDataModule):
    """scikit-learn's diabetes regression set (442 samples, 10 features)."""

    kind = "regression"

    def load(self) -> dict[str, np.ndarray]:
        from sklearn.datasets import load_diabetes

        d = load_diabetes()
        return {"x": d.data.astype(np.float32), "y": d.target.astype(np.float32)}


@DATASETS.register("synthetic_regression")
class SyntheticRegression(ArrayDataModule):
    """y = f(x) + noise with x ~ N(0, I); f linear (w.x) or nonlinear (sin(w1.x) + (w2.x)^2/2).
    A fraction of targets is shifted by +-outlier_scale * std(y) (heavy-tailed outliers)."""

    kind = "regression"

    def __init__(self, num_samples: int = 2000, num_features: int = 10, target: str = "linear",
                 noise: float = 0.1, outlier_fraction: float = 0.0, outlier_scale: float = 10.0,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        owner = "data 'synthetic_regression'"
        check_choice(owner, "target", target, ("linear", "nonlinear"))
        check_range(owner, "noise", noise, low=0)
        check_range(owner, "outlier_fraction", outlier_fraction, low=0, high=1)
        check_range(owner, "num_samples", num_samples, low=10)
        self.n, self.d, self.target = int(num_samples), int(num_features), target
        self.noise, self.outlier_fraction, self.outlier_scale = noise, outlier_fraction, \
            outlier_scale

    def load(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal((self.n, self.d)).astype(np.float32)
        w1 = rng.standard_normal(self.d) / np.sqrt(self.d)
        if self.target == "linear":
            y = x @ w1
        else:
            w2 = rng.standard_normal(self.d) / np.sqrt(self.d)
            y = np.sin(2 * (x @ w1)) + 0.5 * (x @ w2) ** 2
        y = y + self.noise * rng.standard_normal(self.n)
        k = int(round(self.outlier_fraction * self.n))
        if k:
            where = rng.choice(self.n, size=k, replace=False)
            y[where] += rng.choice([-1.0, 1.0], size=k) * self.outlier_scale * y.std()
        return {"x": x, "y": y.astype(np.float32)}


@DATASETS.register("imbalanced")
class Imbalanced(ArrayDataModule):
    """Binary classification (scikit-learn make_classification) with a given positive rate."""

    def __init__(self, num_samples: int = 4000, num_features: int = 20,
                 positive_rate: float = 0.05, class_sep: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        check_range("data 'imbalanced'", "positive_rate", positive_rate, low=0, high=0.5,
                    low_inclusive=False)
        self.n, self.d = int(num_samples), int(num_features)
        self.positive_rate, self.class_sep = positive_rate, class_sep

    def load(self) -> dict[str, np.ndarray]:
        from sklearn.datasets import make_classification

        x, y = make_classification(n_samples=self.n, n_features=self.d,
                                   n_informative=min(5, self.d), n_redundant=0,
                                   weights=[1 - self.positive_rate], class_sep=self.class_sep,
                                   flip_y=0.0, random_state=self.seed)
        return {"x": x.astype(np.float32), "y": y}
