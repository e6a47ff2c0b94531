"""losslab.deferred_modules on a throw-away package (whose code records each execution), and
the one real use: scipy.signal, deferred by the entry point's start-up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest

from losslab.deferred_modules import (
    class_,
    context,
    defer_module,
    function,
    is_deferred,
    load_deferred,
    namespace,
    still_deferred,
)


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    """`dpkg.sub`: a package whose __init__ appends to dpkg.RUNS when it executes, with a
    submodule `windows` and a module-level __getattr__."""
    root = tmp_path / "dpkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("RUNS = []\n")
    (root / "sub" / "__init__.py").write_text(textwrap.dedent("""
        import dpkg
        dpkg.RUNS.append("sub")
        from contextlib import contextmanager
        from . import windows
        LOG = []
        class Thing:
            kind = "real"
        @contextmanager
        def ctx(tag):
            LOG.append(("enter", tag))
            yield tag
            LOG.append(("exit", tag))
        def butter(n):
            return ("butter", n)
        def __getattr__(name):
            if name == "legacy":
                return "from module __getattr__"
            raise AttributeError(name)
    """))
    (root / "sub" / "windows.py").write_text("def hamming(n):\n    return ('hamming', n)\n"
                                            "WIDTH = 3\n")
    (root / "reader.py").write_text(textwrap.dedent("""
        import dpkg.sub
        from dpkg.sub import Thing as THING  # (read through importlib's _handle_fromlist)
        HAS_HAMMING = hasattr(dpkg.sub, "hamming")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in [n for n in sys.modules if n == "dpkg" or n.startswith("dpkg.")]:
        del sys.modules[name]


def test_a_deferred_module_is_importable_without_running_its_code(pkg):
    assert defer_module("dpkg.sub", {"hamming": "windows.hamming"})
    import dpkg
    import dpkg.sub

    assert dpkg.RUNS == [] and is_deferred("dpkg.sub") and still_deferred() == ["dpkg.sub"]
    assert dpkg.sub is sys.modules["dpkg.sub"]
    assert dpkg.sub.__file__.endswith("__init__.py") and dpkg.sub.__path__  # no load
    assert hasattr(dpkg.sub, "hamming") and dpkg.RUNS == []  # the stand-in answers


def test_the_first_missing_attribute_loads_it_into_the_same_object(pkg):
    defer_module("dpkg.sub", {"hamming": "windows.hamming"})
    import dpkg
    from dpkg import sub  # a reference taken while deferred

    assert sub.butter(3) == ("butter", 3)
    assert dpkg.RUNS == ["sub"] and not is_deferred("dpkg.sub") and still_deferred() == []
    assert type(sub) is types.ModuleType and sys.modules["dpkg.sub"] is sub
    assert sub.legacy == "from module __getattr__"  # the module's own __getattr__ works
    assert sub.hamming is sub.windows.hamming  # the stand-in replaced by its target
    with pytest.raises(AttributeError):
        _ = sub.missing
    assert dpkg.RUNS == ["sub"]  # executed once


def test_a_stand_in_call_loads_the_module_and_calls_the_target(pkg):
    defer_module("dpkg.sub", {"hamming": "windows.hamming"})
    import dpkg
    import dpkg.sub

    stand_in = dpkg.sub.hamming
    assert stand_in(4) == ("hamming", 4) and dpkg.RUNS == ["sub"]
    assert dpkg.sub.hamming is dpkg.sub.windows.hamming is not stand_in


def test_a_submodule_imports_without_loading_its_deferred_parent(pkg):
    defer_module("dpkg.sub")
    import dpkg
    import dpkg.sub.windows

    assert dpkg.sub.windows.hamming(2) == ("hamming", 2)
    assert dpkg.RUNS == [] and is_deferred("dpkg.sub")
    load_deferred(dpkg.sub)
    assert dpkg.RUNS == ["sub"] and dpkg.sub.windows is sys.modules["dpkg.sub.windows"]


def test_imported_or_missing_modules_are_not_deferred(pkg):
    import dpkg.sub

    assert not defer_module("dpkg.sub") and type(dpkg.sub) is types.ModuleType
    assert not defer_module("dpkg.nonexistent") and "dpkg.nonexistent" not in sys.modules
    assert not defer_module("no_such_package_xyz.sub")


def test_a_module_that_fails_to_load_stays_deferred(pkg, tmp_path):
    (tmp_path / "dpkg" / "sub" / "__init__.py").write_text("raise RuntimeError('broken')\n")
    defer_module("dpkg.sub")
    import dpkg.sub

    for _ in range(2):  # the error each time, not a half-loaded module
        with pytest.raises(RuntimeError, match="broken"):
            _ = dpkg.sub.anything
        assert is_deferred("dpkg.sub")


def test_stand_ins_answer_only_their_reader(pkg):
    defer_module("dpkg.sub", {"hamming": function("windows.hamming"), "Thing": class_("Thing")},
                 reader="dpkg.reader")
    import dpkg
    import dpkg.reader

    assert dpkg.reader.HAS_HAMMING and dpkg.RUNS == []  # the reader got stand-ins, no load
    stand_in = dpkg.reader.THING
    assert dpkg.sub.hamming is dpkg.sub.windows.hamming  # any other code: the real module
    assert dpkg.RUNS == ["sub"] and dpkg.sub.Thing is not stand_in


def test_a_class_stand_in_checks_calls_and_reads_the_real_class(pkg):
    defer_module("dpkg.sub", {"Thing": class_("Thing")})
    import dpkg
    import dpkg.sub

    stand_in = dpkg.sub.Thing
    assert isinstance(stand_in, type) and dpkg.RUNS == []
    assert not isinstance(5, stand_in) and dpkg.RUNS == ["sub"]  # the first check loads
    real = dpkg.sub.Thing
    assert real is not stand_in and isinstance(real(), stand_in) and issubclass(real, stand_in)
    assert type(stand_in()) is real and stand_in.kind == "real"


def test_a_context_stand_in_enters_the_real_context_only_when_used(pkg):
    defer_module("dpkg.sub", {"ctx": context("ctx"),
                              "win": namespace("windows", hamming=function("windows.hamming"))})
    import dpkg
    import dpkg.sub

    @dpkg.sub.ctx("deco")  # as torchmetrics decorates its plot functions at import time
    def draw(x):
        return x * 2

    win = dpkg.sub.win
    assert dpkg.RUNS == []
    assert draw(2) == 4 and draw(3) == 6 and dpkg.RUNS == ["sub"]
    assert dpkg.sub.LOG == [("enter", "deco"), ("exit", "deco")] * 2
    with context_of(dpkg) as tag:
        assert tag == "with"
    assert win.hamming(1) == ("hamming", 1) and win.WIDTH == 3  # others: the real module's


def context_of(dpkg):
    from losslab.deferred_modules import _LazyContext

    return _LazyContext(lambda: dpkg.sub.ctx, ("with",), {})


def test_the_entry_point_defers_scipy_signal_and_keeps_torchmetrics_alias():
    """begin() then torchmetrics (as Lightning imports it): scipy.signal stays unexecuted;
    on use it is the real module, with torchmetrics' `hamming` alias in place."""
    code = """
import sys
from losslab.startup import begin
begin()
import torchmetrics
import scipy.signal
from losslab.deferred_modules import still_deferred
assert "scipy.signal" in still_deferred(), still_deferred()
assert "scipy.signal._signaltools" not in sys.modules and "scipy.stats" not in sys.modules
from scipy.signal import butter
b, a = butter(2, 0.5)
assert "scipy.signal" not in still_deferred() and len(b) == 3
assert scipy.signal.hamming is scipy.signal.windows.hamming
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_the_entry_point_defers_matplotlib_axes_and_pyplot_and_torchmetrics_plots():
    """begin() then torchmetrics: matplotlib.axes and .pyplot stay unexecuted (torchmetrics
    holds stand-ins for its type hints and plot style); Metric.plot() then draws for real, and
    torchmetrics' isinstance check against Axes sees the real class."""
    code = """
import sys
from losslab.startup import begin
begin()
import torch, torchmetrics
from losslab.deferred_modules import still_deferred
deferred = still_deferred()
assert deferred == ["matplotlib.axes", "matplotlib.pyplot", "scipy.signal"], deferred
assert "matplotlib.axes._base" not in sys.modules and "matplotlib.figure" not in sys.modules
import matplotlib
matplotlib.use("Agg")
metric = torchmetrics.MeanMetric()
metric.update(torch.tensor([1.0, 3.0]))
fig, ax = metric.plot()
import matplotlib.axes, matplotlib.figure, matplotlib.pyplot as plt
from torchmetrics.utilities import plot
assert isinstance(fig, matplotlib.figure.Figure) and isinstance(ax, matplotlib.axes.Axes)
assert isinstance(ax, plot._AX_TYPE) and plot.trim_axs(ax, 1) is ax
assert plt.Figure is matplotlib.figure.Figure and "matplotlib.axes" not in still_deferred()
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
