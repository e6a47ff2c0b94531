"""Sweeps: per-job failure records, the end-of-sweep summary (table, mean ± std, curves) and
DDP jobs inside a multirun. See docs/sweeps.md."""
