"""Data modules (in-memory, seeded splits) behind the DATASETS registry."""

from losslab.data import multitask, sources  # noqa: F401  (registration)
from losslab.data.base import DATASETS, ArrayDataModule, DataInfo
from losslab.data.loaders import InMemoryLoader

__all__ = ["DATASETS", "ArrayDataModule", "DataInfo", "InMemoryLoader"]
