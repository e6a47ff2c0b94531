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
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).resolve().parent
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math",
         "-fPIC", "-shared")
LIBS = ("-lmvec", "-lm")


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
    key = hashlib.sha256(b"\0".join([source, " ".join(FLAGS + LIBS).encode(), cc.encode(),
                                     machine_id().encode()])).hexdigest()[:16]
    return cache_dir() / f"{name}-{key}.so"


def compile_library(name: str, cc: str, target: Path) -> None:
    """cc FLAGS <name>.c -o target (atomically: a temporary file renamed into place)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *FLAGS, str(SOURCE_DIR / f"{name}.c"), "-o", tmp, *LIBS],
                       check=True, capture_output=True, text=True, timeout=120)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernels of `<name>.c` (built on first use), or None (see the module doc)."""
    if not enabled():
        return None
    cc = compiler()
    if cc is None:
        log.info("losslab native kernels: no C compiler found; using the torch implementation")
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
        return ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", "") or err
        log.warning("losslab native kernel %r could not be built (%s); using the torch "
                    "implementation (slower). Set LOSSLAB_NATIVE=0 to skip the attempt.",
                    name, str(detail).strip().splitlines()[-1:] or detail)
        return None
