"""ctypes bindings of norms.c: per-tensor L2 norms of many CPU tensors in one call (and, for
the prepared per-step call, the extension module of fastcall.c where it builds).

`norms(tensors)` returns a float32 tensor [len(tensors)] of ||t||_2, and `diff_norms(a, b)` the
pair (||a_t - b_t||_2, ||a_t||_2) per tensor, or None when the tensors are not all contiguous
CPU float32 (or all float64) tensors, or no kernel could be built; callers then use
`torch._foreach_norm`. `grouped_norms` adds the total and per-layer norms in the same call
(`GroupedNorms` is that call prepared once for a model's gradients: Python floats from a
reused C array, no tensor made; what gradient monitoring reads every step). On the default
MLP's gradients the kernel takes ~10 us on warm memory, about half of `_foreach_norm` (one
call instead of one dispatch per tensor, and float32 block sums in 16 vector lanes; see
norms.c).
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any

import torch
from torch import Tensor

from losslab.native.build import load, load_module

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


def _readable(tensors: list[Tensor], dtype: torch.dtype, numels: tuple[int, ...]) -> bool:
    """Every tensor is a contiguous CPU tensor of `dtype` with the planned number of entries
    (the kernels read raw host memory; a length mismatch is left to the caller's assignment,
    which raises)."""
    for t, n in zip(tensors, numels, strict=False):
        if t.dtype is not dtype or not t.is_cpu or not t.is_contiguous() or t.numel() != n:
            return False
    return True


class _PreparedCall:
    """The call both plans share: the extension module's (fastcall.c) where it is built, else
    the checks, the data pointers and the kernel through ctypes. A plan sets `dtype`,
    `_numels`, `_pointers`, `_out`, the kernel `_fn` with its arguments after the pointers
    (`_kernel_args`), and the extension's function and arguments (`_fast`, `_args`)."""

    dtype: torch.dtype
    _numels: tuple[int, ...]
    _pointers: ctypes.Array
    _out: ctypes.Array
    _fn: ctypes._CFuncPtr
    _kernel_args: tuple[Any, ...]
    _fast: Any
    _args: tuple[Any, ...]

    def direct(self) -> tuple[Any, tuple[Any, ...]]:
        """(fn, args) with fn(tensors, *args) == self(tensors) for a list: the extension's
        function itself where it is built (no Python frame in between), else this call."""
        if self._fast is not None:
            return self._fast, (self.dtype, *self._args)
        return self.__call__, ()

    def __call__(self, tensors: list[Tensor]) -> list[float] | None:
        dtype = self.dtype
        if self._fast is not None and type(tensors) is list:
            return self._fast(tensors, dtype, *self._args)
        if not _readable(tensors, dtype, self._numels):
            return None
        self._pointers[:] = [t.data_ptr() for t in tensors]  # (a length mismatch raises)
        self._fn(self._pointers, *self._kernel_args)
        return self._out[:]


class GroupedNorms(_PreparedCall):
    """`grouped_norms` prepared for one fixed list of tensor sizes and groups (a model's
    gradients): the kernel, its size/group arrays and the output array are built once, so a
    call only checks the tensors, fills their data pointers and returns the floats.

    On the default MLP, where the call comes right after backward with the interpreter's
    caches cold, this saved ~9 us per step in the training loop (50 -> 41 us, the two calls
    alternated step by step in one fit) and ~25 us in a plain loop on a slow stretch
    (83 -> 57 us).
    `plan(tensors)` -> [P per-tensor norms, total, num_groups group norms] as Python floats,
    or None when a tensor is not a contiguous CPU tensor of the planned dtype.
    Where the extension module of fastcall.c builds (it needs Python.h), the call is made by it
    (same checks, same kernel): 12-16 us less per step in the loop than the ctypes call (25-37
    vs 37-53 us, the two alternated step by step in one fit; `fast=False` keeps ctypes).
    """

    def __init__(self, fn: ctypes._CFuncPtr, numels: tuple[int, ...], groups: tuple[int, ...],
                 num_groups: int, dtype: torch.dtype, fast: bool = True) -> None:
        count = len(numels)
        self.dtype = dtype
        self._fn = fn
        self._pointers = (ctypes.c_void_p * count)()
        self._lens = (ctypes.c_int64 * count)(*numels)
        self._count = ctypes.c_int64(count)
        self._groups = (ctypes.c_int64 * count)(*groups)
        self._num_groups = ctypes.c_int64(num_groups)
        self._out = (ctypes.c_float * (count + 1 + num_groups))()
        self._numels = numels
        self._kernel_args = (self._lens, self._count, self._groups, self._num_groups, self._out)
        # the extension module's call (fastcall.c): the same checks and kernel, made in C
        module = load_module("fastcall") if fast else None
        self._fast = None if module is None else module.grouped_norms
        self._args = (count, ctypes.cast(fn, ctypes.c_void_p).value,
                      ctypes.addressof(self._pointers), ctypes.addressof(self._lens),
                      ctypes.addressof(self._groups), num_groups, ctypes.addressof(self._out))

    @classmethod
    def prepare(cls, numels: tuple[int, ...], groups: tuple[int, ...], num_groups: int,
                dtype: torch.dtype) -> GroupedNorms | None:
        """The plan, or None (no tensors, a dtype without a kernel, or no kernel built)."""
        if not numels or len(groups) != len(numels) or dtype not in _NAME:
            return None
        fn = _function(f"grouped_norms_{_NAME[dtype]}")
        return None if fn is None else cls(fn, numels, groups, num_groups, dtype)



class DiffNorms(_PreparedCall):
    """`diff_norms` prepared against fixed snapshot tensors (the update ratio's copies of the
    weights before the step): their pointers, the sizes, the kernel and the output array are
    built once, so a call checks and reads only the live tensors' pointers. The plan keeps the
    snapshots alive.

    `plan(tensors)` -> [||a_t - s_t|| for each t, then ||a_t|| for each t] as Python floats, or
    None when a tensor is not a contiguous CPU tensor of the snapshots' dtype and size. Made by
    the extension module of fastcall.c where it builds, else by ctypes.
    """

    def __init__(self, fn: ctypes._CFuncPtr, snapshots: list[Tensor], fast: bool = True) -> None:
        count = len(snapshots)
        self.dtype = snapshots[0].dtype
        self._snapshots = list(snapshots)
        self._fn = fn
        self._pointers = (ctypes.c_void_p * count)()
        self._other = (ctypes.c_void_p * count)(*[t.data_ptr() for t in snapshots])
        self._numels = tuple(t.numel() for t in snapshots)
        self._lens = (ctypes.c_int64 * count)(*self._numels)
        self._count = ctypes.c_int64(count)
        self._out = (ctypes.c_float * (2 * count))()
        self._kernel_args = (self._other, self._lens, self._count, self._out)
        module = load_module("fastcall") if fast else None
        self._fast = None if module is None else module.diff_norms
        self._args = (count, ctypes.cast(fn, ctypes.c_void_p).value,
                      ctypes.addressof(self._pointers), ctypes.addressof(self._other),
                      ctypes.addressof(self._lens), ctypes.addressof(self._out))

    @classmethod
    def prepare(cls, snapshots: list[Tensor]) -> DiffNorms | None:
        """The plan, or None (no snapshots, not all contiguous CPU float32/64, no kernel)."""
        suffix = _eligible(snapshots) if snapshots else None
        fn = None if suffix is None else _function(f"diff_norms_{suffix}")
        return None if fn is None else cls(fn, snapshots)



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

