"""losslab.deferred_modules on a throw-away package (whose code records each execution), and
the one real use: scipy.signal, deferred by the entry point's start-up."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types

import pytest

from losslab.deferred_modules import defer_module, is_deferred, load_deferred, still_deferred


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
        from . import windows
        def butter(n):
            return ("butter", n)
        def __getattr__(name):
            if name == "legacy":
                return "from module __getattr__"
            raise AttributeError(name)
    """))
    (root / "sub" / "windows.py").write_text("def hamming(n):\n    return ('hamming', n)\n")
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
assert still_deferred() == ["scipy.signal"], still_deferred()
assert "scipy.signal._signaltools" not in sys.modules and "scipy.stats" not in sys.modules
from scipy.signal import butter
b, a = butter(2, 0.5)
assert still_deferred() == [] and len(b) == 3
assert scipy.signal.hamming is scipy.signal.windows.hamming
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
