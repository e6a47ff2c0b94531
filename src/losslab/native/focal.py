"""ctypes bindings of the fused focal kernels (focal.c): loss, sum and gradient in one pass.

`binary(...)` and `multiclass(...)` return `(value, grad)` for contiguous float32 / float64 CPU
logits, or None when the inputs are not ones the kernels take (another device or dtype) or no
kernel could be built, so the caller falls back to its torch implementation. `value` is the
per-sample loss [N] (`scale` None) or the 0-d `scale * sum`; `grad` is d(value summed)/dz, None
unless asked for. Large inputs are split over `torch.get_num_threads()` threads (ctypes releases
the GIL during the call), each chunk at least `MIN_CHUNK` elements.
"""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import torch
from torch import Tensor

from losslab.native.build import load

MIN_CHUNK = 1 << 16  # elements per thread; below this one thread is faster than the hand-off

_CTYPE = {torch.float32: ctypes.c_float, torch.float64: ctypes.c_double}
_ZNAME = {torch.float32: "f32", torch.float64: "f64"}
_YNAME = {torch.float32: "f32", torch.float64: "f64", torch.int64: "i64"}
_PTR = ctypes.c_void_p


@cache
def _function(name: str, real: type) -> ctypes._CFuncPtr | None:
    lib = load("focal")
    if lib is None:
        return None
    fn = getattr(lib, name)
    fn.restype = ctypes.c_double
    if name.startswith("focal_binary"):
        fn.argtypes = [_PTR, _PTR, _PTR, _PTR, ctypes.c_int64, real, real, real]
    else:
        fn.argtypes = [_PTR, _PTR, _PTR, _PTR, _PTR, ctypes.c_int64, ctypes.c_int64, real, real,
                       ctypes.POINTER(ctypes.c_int64)]
    return fn


def supports(z: Tensor, y: Tensor, alpha: Tensor | None = None) -> bool:
    """Whether `binary` / `multiclass` take these inputs (CPU, float32/64 logits, kernels
    built): callers check this before choosing the native path."""
    return (z.is_cpu and y.is_cpu and z.dtype in _CTYPE and (alpha is None or alpha.is_cpu)
            and available())


def available() -> bool:
    """Whether the kernels are built and loadable on this machine."""
    return _function("focal_binary_f32_f32", ctypes.c_float) is not None


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="losslab-native")


def _chunks(n: int, per_item: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges: one per thread when each gets >= MIN_CHUNK elements."""
    parts = min(torch.get_num_threads(), (n * per_item) // MIN_CHUNK)
    if parts < 2:
        return [(0, n)]
    step = -(-n // parts)
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def _run(calls: list) -> float:
    if len(calls) == 1:
        return calls[0]()
    return sum(f.result() for f in [_pool(len(calls)).submit(c) for c in calls])


def _as_kernel_labels(y: Tensor, dtype: torch.dtype) -> Tensor:
    """Float targets in the logits' dtype, anything else (bool, int32, ...) as int64 labels."""
    return (y.to(dtype) if y.is_floating_point() else y.long()).contiguous()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def binary(z: Tensor, y: Tensor, gamma: float, a_neg: float | None, a_pos: float | None,
           scale: float | None, want_grad: bool) -> tuple[Tensor, Tensor | None] | None:
    """Binary focal loss on logits z [N] and targets y [N] in [0, 1] (see focal.c)."""
    if not (z.is_cpu and y.is_cpu and z.dtype in _CTYPE and z.dim() == 1):
        return None
    y = _as_kernel_labels(y, z.dtype)
    fn = _function(f"focal_binary_{_ZNAME[z.dtype]}_{_YNAME[y.dtype]}", _CTYPE[z.dtype])
    if fn is None:
        return None
    z = z.detach().contiguous()
    k = 1.0 if scale is None else scale
    ka, kd = (k, 0.0) if a_neg is None else (k * a_neg, k * (a_pos - a_neg))  # k alpha_t
    loss = torch.empty_like(z) if scale is None else None
    grad = torch.empty_like(z) if want_grad else None
    zp, yp, lp, gp = z.data_ptr(), y.data_ptr(), _ptr(loss), _ptr(grad)
    zs, ys = z.element_size(), y.element_size()

    def call(a: int, b: int):
        return lambda: fn(zp + a * zs, yp + a * ys, None if lp is None else lp + a * zs,
                          None if gp is None else gp + a * zs, b - a, gamma, ka, kd)

    total = _run([call(a, b) for a, b in _chunks(len(z), 1)])
    return (loss if loss is not None else torch.tensor(total, dtype=z.dtype)), grad


def multiclass(z: Tensor, y: Tensor, gamma: float, alpha: Tensor | None, scale: float | None,
               want_grad: bool) -> tuple[Tensor, Tensor | None] | None:
    """Softmax focal loss on logits z [N, C] and labels y [N] (see focal.c); an out-of-range
    label raises IndexError (as torch's gather does)."""
    if not (z.is_cpu and y.is_cpu and z.dtype in _CTYPE and z.dim() == 2 and z.shape[1] > 0):
        return None
    if alpha is not None and not alpha.is_cpu:
        return None
    fn = _function(f"focal_multiclass_{_ZNAME[z.dtype]}", _CTYPE[z.dtype])
    if fn is None:
        return None
    z = z.detach().contiguous()
    y = y.long().contiguous()
    n, c = z.shape
    k = 1.0 if scale is None else scale
    if alpha is not None and alpha.dim() == 0:  # a constant factor: folded into k
        k, alpha = k * float(alpha), None
    if alpha is not None:
        alpha = alpha.detach().to(z.dtype).contiguous()
    loss = torch.empty(n, dtype=z.dtype) if scale is None else None
    grad = torch.empty_like(z) if want_grad else None
    zp, yp, ap, lp, gp = z.data_ptr(), y.data_ptr(), _ptr(alpha), _ptr(loss), _ptr(grad)
    zs = z.element_size()
    chunks = _chunks(n, c)
    bad = [ctypes.c_int64(-1) for _ in chunks]  # per chunk: the row of a bad label, or -1

    def call(a: int, b: int, flag: ctypes.c_int64):
        return lambda: fn(zp + a * c * zs, yp + a * 8, ap, None if lp is None else lp + a * zs,
                          None if gp is None else gp + a * c * zs, b - a, c, gamma, k,
                          ctypes.byref(flag))

    total = _run([call(a, b, flag) for (a, b), flag in zip(chunks, bad, strict=True)])
    for (a, _), flag in zip(chunks, bad, strict=True):
        if flag.value >= 0:
            raise IndexError(f"Target {int(y[a + flag.value])} is out of bounds "
                             f"(classes: {c}).")
    return (loss if loss is not None else torch.tensor(total, dtype=z.dtype)), grad
