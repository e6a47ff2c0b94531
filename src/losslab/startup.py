"""The command-line entry point's start-up: no cyclic garbage collector, no unused imports.

`begin()` is the first call of `train.py` and `losslab-train`: `pause_gc()`, then
`defer_unused_imports()`.

## The garbage collector

Importing torch, Lightning and their dependencies and composing the Hydra config leaves some
700,000 objects tracked by the collector. With it on, those allocations trigger several full
(generation-2) collections, each scanning everything imported so far: 1-2 s of a 5-6 s start-up
on this project's 2-core machine (README, "Performance"). So `train.py` and `losslab-train`
call `pause_gc()` first, and `losslab.run.train` calls `resume_gc()` once the run is set up,
just before training:

    gc.freeze()   # everything alive now moves to a permanent generation that later
                  # collections skip: the start-up objects are never scanned again
    gc.enable()

The price: the cyclic garbage made during start-up (~37,000 objects here) is frozen with the
rest and never freed; a default run's peak resident memory is ~13 MB (2.8%) higher. Collecting
it first would cost the full scan the pause avoids (0.3-0.5 s).

A multirun's main process resumes when the sweep starts (the Hydra callback
`losslab.sweeps.startup_gc.ResumeGcAtSweepStart`, in conf/hydra/default.yaml), since with a
launcher that runs the jobs in other processes it never reaches `losslab.run.train`; a job
that fails before training resumes in `losslab.cli`'s job wrapper.

Importing `losslab` as a library, the tests and the scripts change nothing: only the entry
point pauses, and `resume_gc()` only undoes a pause made here. `LOSSLAB_GC_PAUSE=0` in the
environment turns the pause (and so the freeze) off.

## Unused imports
Lightning imports torchmetrics, whose `__init__` imports, for nothing a losslab run uses:

- `scipy.signal` (only to alias `scipy.signal.hamming` for SRMRpy), which pulls in
  scipy.stats, .optimize, .interpolate, .spatial, .sparse and .linalg: ~520 modules, 0.7-0.9 s
  of the start-up here (README, "Performance"), unless a run computes an audio metric
  (generating MNIST-1D needs scipy.interpolate and .ndimage, which import as usual);
- `matplotlib.axes` and `matplotlib.pyplot` (in `torchmetrics.utilities.plot`, for the type
  hints and the style of `Metric.plot()`): ~200 modules, ~0.3 s; losslab's own figures (the
  labelled gradient heatmap at the end of training, the LR finder's plot) import them later.

`defer_unused_imports()` registers the modules in `DEFERRED_MODULES` as deferred
(`losslab.deferred_modules`): importable by name at once, executed on first use. The stand-ins
answer only torchmetrics' reads at import time: `hasattr(scipy.signal, "hamming")`, and
`plt.Figure`, `plt.style.context`, `matplotlib.axes.Axes` (a class whose isinstance checks go to
the real `Axes`, and a style context entered, loading pyplot, only when a plot is drawn).
`LOSSLAB_DEFER_IMPORTS=0` turns this off.
"""

from __future__ import annotations

import gc
import os

from losslab.deferred_modules import StandIn, class_, context, defer_module, function, namespace

# module -> (the code whose reads its stand-ins answer, {attribute: stand-in}); see
# losslab.deferred_modules
DEFERRED_MODULES: dict[str, tuple[str, dict[str, StandIn]]] = {
    "scipy.signal": ("torchmetrics", {"hamming": function("windows.hamming")}),
    "matplotlib.axes": ("torchmetrics.utilities.plot", {"Axes": class_("Axes")}),
    "matplotlib.pyplot": ("torchmetrics.utilities.plot", {
        "Figure": class_("Figure"), "style": namespace("style", context=context("style.context"))}),
}

_paused = False


def begin() -> None:
    """The entry point's first call, before it imports Lightning."""
    pause_gc()
    defer_unused_imports()


def defer_unused_imports() -> None:
    """Defer the modules in DEFERRED_MODULES (no-op with LOSSLAB_DEFER_IMPORTS=0)."""
    if os.environ.get("LOSSLAB_DEFER_IMPORTS", "1") != "0":
        for name, (reader, stand_ins) in DEFERRED_MODULES.items():
            defer_module(name, stand_ins, reader=reader)


def pause_gc() -> None:
    """Turn the cyclic garbage collector off until `resume_gc()` (no-op if it is off, or with
    LOSSLAB_GC_PAUSE=0)."""
    global _paused
    if gc.isenabled() and os.environ.get("LOSSLAB_GC_PAUSE", "1") != "0":
        gc.disable()
        _paused = True


def resume_gc() -> None:
    """After `pause_gc()`: freeze the objects alive now, then turn the collector back on."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def gc_paused() -> bool:
    """Whether `pause_gc()` turned the collector off and `resume_gc()` has not yet run."""
    return _paused
