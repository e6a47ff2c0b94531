"""The Trainer's default profiler: Lightning's pass-through profiler without its per-call cost.

Lightning wraps every hook call (each callback's, the module's, the strategy's: ~90 per training
step in the default run) in `trainer.profiler.profile(name)`. Its default PassThroughProfiler
inherits a generator-based context manager (~10 Python calls per use) and an f-string name is
built around it. `NoProfiler.profile` returns one shared `contextlib.nullcontext` instead (two
calls). Profiling stays one override away: `trainer.profiler=simple` (or advanced, pytorch).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from lightning.pytorch.profilers import PassThroughProfiler

_NULL = nullcontext()


class NoProfiler(PassThroughProfiler):
    """Records nothing; `profile()` costs one method call and a reused null context."""

    def profile(self, action_name: str) -> AbstractContextManager:  # type: ignore[override]
        return _NULL
