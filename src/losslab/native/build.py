"""Compile a kernel source shipped with losslab into a shared library, once per machine.

`load(name)` returns a `ctypes.CDLL` for `losslab/native/<name>.c`, or None when native kernels
are off (`LOSSLAB_NATIVE=0`), no C compiler is found or the build fails; callers then use their
torch path, so a missing compiler only costs speed. The library is built with
`cc -O3 -march=native` (vectorised with glibc's libmvec) into a cache folder
(`$LOSSLAB_NATIVE_CACHE`, else `$XDG_CACHE_HOME/losslab/native`, else `~/.cache/losslab/native`;
the temp folder if that cannot be written) under a name hashed from the source, the flags, the
compiler and this CPU, so a changed source or another machine rebuilds, and concurrent
processes (DDP ranks) never see a half-written file (each writes its own temporary file, then
renames it into place). A build takes about a second.

`load_module(name)` builds `<name>.c` the same way as a CPython extension module
(`_losslab_<name>`, compiled against this interpreter's headers; its cache name also hashes the
Python version and ABI) and imports it, or returns None (no Python.h, or any failure above);
its callers keep their ctypes path then.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math",
         "-fPIC", "-shared")
LIBS = ("-lmvec", "-lm")
EXTENSIONS = frozenset({"fastcall"})  # sources that are CPython extension modules


def python_include() -> Path:
    return Path(sysconfig.get_paths()["include"])


def flags(name: str) -> tuple[str, ...]:
    """The compiler flags for `<name>.c` (an extension module also gets Python's headers)."""
    return (*FLAGS, f"-I{python_include()}") if name in EXTENSIONS else FLAGS


def enabled() -> bool:
    """False when LOSSLAB_NATIVE is 0 / false / no / off."""
    return os.environ.get("LOSSLAB_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    env = os.environ.get("LOSSLAB_NATIVE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "losslab" / "native"


def compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc and shutil.which(cc):
        return shutil.which(cc)
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def machine_id() -> str:
    """This CPU's model and instruction-set flags (what -march=native compiles for)."""
    parts = [platform.machine(), platform.system()]
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip()
            if key in ("model name", "flags", "Features", "CPU part"):
                parts.append(line)
                if len(parts) >= 5:
                    break
    except OSError:
        pass
    return "\n".join(parts)


def library_path(name: str, cc: str) -> Path:
    source = (SOURCE_DIR / f"{name}.c").read_bytes()
    python = f"{sys.version}|{sysconfig.get_config_var('EXT_SUFFIX')}" \
        if name in EXTENSIONS else ""
    key = hashlib.sha256(b"\0".join([source, " ".join(flags(name) + LIBS).encode(), cc.encode(),
                                     machine_id().encode(), python.encode()])).hexdigest()[:16]
    return cache_dir() / f"{name}-{key}.so"


def compile_library(name: str, cc: str, target: Path) -> None:
    """cc FLAGS <name>.c -o target (atomically: a temporary file renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *flags(name), str(SOURCE_DIR / f"{name}.c"), "-o", tmp, *LIBS],
                       check=True, capture_output=True, text=True, timeout=120)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _built(name: str, fallback: str) -> Path | None:
    """The path of `<name>.c`'s shared library, built if needed; None when native code is off
    or cannot be built (logged, naming what the caller falls back to)."""
    if not enabled():
        return None
    cc = compiler()
    if cc is None:
        log.info("losslab native kernels: no C compiler found; using %s", fallback)
        return None
    if name in EXTENSIONS and not (python_include() / "Python.h").exists():
        log.info("losslab native %r: no Python.h in %s; using %s", name, python_include(),
                 fallback)
        return None
    try:
        path = library_path(name, cc)
        if not path.exists():
            try:
                compile_library(name, cc, path)
            except PermissionError:  # an unwritable cache folder: build in the temp folder
                path = Path(tempfile.gettempdir()) / f"losslab-native-{os.getuid()}" / path.name
                if not path.exists():
                    compile_library(name, cc, path)
        return path
    except (OSError, subprocess.SubprocessError) as err:
        _warn(name, err, fallback)
        return None


def _warn(name: str, err: BaseException, fallback: str) -> None:
    detail = getattr(err, "stderr", "") or err
    log.warning("losslab native kernel %r could not be built (%s); using %s. Set "
                "LOSSLAB_NATIVE=0 to skip the attempt.", name,
                str(detail).strip().splitlines()[-1:] or detail, fallback)


@cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernels of `<name>.c` (built on first use), or None (see the module doc)."""
    fallback = "the torch implementation (slower)"
    path = _built(name, fallback)
    if path is None:
        return None
    try:
        return ctypes.CDLL(str(path))
    except OSError as err:
        _warn(name, err, fallback)
        return None


@cache
def load_module(name: str) -> ModuleType | None:
    """The CPython extension module `_losslab_<name>` built from `<name>.c`, or None."""
    fallback = "the ctypes call"
    path = _built(name, fallback)
    if path is None:
        return None
    try:
        spec = importlib.util.spec_from_file_location(f"_losslab_{name}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"no module spec for {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except (ImportError, OSError) as err:
        _warn(name, err, fallback)
        return None
