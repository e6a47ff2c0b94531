"""ctypes bindings of norms.c: per-tensor L2 norms of many CPU tensors in one call.

`norms(tensors)` returns a float32 tensor [len(tensors)] of ||t||_2, and `diff_norms(a, b)` the
pair (||a_t - b_t||_2, ||a_t||_2) per tensor, or None when the tensors are not all contiguous
CPU float32 (or all float64) tensors, or no kernel could be built; callers then use
`torch._foreach_norm`. `grouped_norms` adds the total and per-layer norms in the same call
(what gradient monitoring reads every step; `grouped_norms_host` returns them as Python
floats from a reused C array, no tensor made). On the default MLP's gradients the kernel
takes ~10 us on warm memory, about half of `_foreach_norm` (one call instead of one dispatch
per tensor, and float32 block sums in 16 vector lanes; see norms.c).
"""

from __future__ import annotations

import ctypes
from functools import cache

import torch
from torch import Tensor

from losslab.native.build import load

_NAME = {torch.float32: "f32", torch.float64: "f64"}


@cache
def _function(name: str) -> ctypes._CFuncPtr | None:
    lib = load("norms")
    if lib is None:
        return None
    fn = getattr(lib, name)
    fn.restype = None
    return fn


def _eligible(tensors: list[Tensor]) -> str | None:
    """The kernels' dtype suffix when every tensor is a contiguous CPU tensor of one dtype."""
    dtype = tensors[0].dtype
    if dtype not in _NAME:
        return None
    for t in tensors:
        if t.dtype != dtype or not t.is_cpu or not t.is_contiguous():
            return None
    return _NAME[dtype]


_POINTERS: dict[int, list[ctypes.Array]] = {}


def _pointers(tensors: list[Tensor], slot: int = 0) -> ctypes.Array:
    """The tensors' data pointers in a reused array (one per length and slot; filled by a
    slice assignment, which is cheaper than building a ctypes array per call)."""
    arrays = _POINTERS.setdefault(len(tensors), [])
    while len(arrays) <= slot:
        arrays.append((ctypes.c_void_p * len(tensors))())
    arrays[slot][:] = [t.data_ptr() for t in tensors]
    return arrays[slot]


_LENS: dict[tuple[int, ...], ctypes.Array] = {}


def _lengths(numels: tuple[int, ...]) -> ctypes.Array:
    """The int64 array of `numels` (sizes, or group ids), built once per distinct tuple."""
    lens = _LENS.get(numels)
    if lens is None:
        if len(_LENS) > 64:
            _LENS.clear()
        lens = _LENS[numels] = (ctypes.c_int64 * len(numels))(*numels)
    return lens


def grouped_norms(tensors: list[Tensor], numels: tuple[int, ...], groups: tuple[int, ...],
                  num_groups: int) -> Tensor | None:
    """[P + 1 + num_groups] float32: the P per-tensor norms, the total norm, then each group's
    norm (the norm of its tensors concatenated; `groups[t]` is tensor t's group), one call."""
    suffix = _eligible(tensors) if tensors else None
    fn = None if suffix is None else _function(f"grouped_norms_{suffix}")
    if fn is None:
        return None
    out = torch.empty(len(tensors) + 1 + num_groups, dtype=torch.float32)
    fn(_pointers(tensors), _lengths(numels), ctypes.c_int64(len(tensors)), _lengths(groups),
       ctypes.c_int64(num_groups), ctypes.c_void_p(out.data_ptr()))
    return out


_OUT: dict[int, ctypes.Array] = {}


def grouped_norms_host(tensors: list[Tensor], numels: tuple[int, ...], groups: tuple[int, ...],
                       num_groups: int) -> list[float] | None:
    """`grouped_norms` as Python floats (float32 values), written into a reused C array: no
    tensor is made (what gradient monitoring reads on CPU every step); or None."""
    suffix = _eligible(tensors) if tensors else None
    fn = None if suffix is None else _function(f"grouped_norms_{suffix}")
    if fn is None:
        return None
    size = len(tensors) + 1 + num_groups
    out = _OUT.get(size)
    if out is None:
        out = _OUT[size] = (ctypes.c_float * size)()
    fn(_pointers(tensors), _lengths(numels), ctypes.c_int64(len(tensors)), _lengths(groups),
       ctypes.c_int64(num_groups), out)
    return out[:]


def norms(tensors: list[Tensor], numels: tuple[int, ...] | None = None) -> Tensor | None:
    """[len(tensors)] float32 tensor of L2 norms (block sums in float64; see norms.c), or None.
    `numels`, the tensors' sizes when the caller knows them (a fixed layout), saves a call per
    tensor."""
    if not tensors:
        return None
    sizes = numels if numels is not None else tuple([t.numel() for t in tensors])
    out = grouped_norms(tensors, sizes, (0,) * len(tensors), 1)
    return None if out is None else out[:len(tensors)]


def diff_norms(a: list[Tensor], b: list[Tensor]) -> tuple[Tensor, Tensor] | None:
    """(||a_t - b_t||, ||a_t||) as two float32 tensors [len(a)], one pass; or None."""
    if not a or len(a) != len(b):
        return None
    suffix = _eligible([*a, *b])
    fn = None if suffix is None else _function(f"diff_norms_{suffix}")
    if fn is None or [x.numel() for x in a] != [y.numel() for y in b]:
        return None
    out = torch.empty(2 * len(a), dtype=torch.float32)
    lens = _lengths(tuple([t.numel() for t in a]))
    fn(_pointers(a, 0), _pointers(b, 1), lens, ctypes.c_int64(len(a)),
       ctypes.c_void_p(out.data_ptr()))
    return out[:len(a)], out[len(a):]

