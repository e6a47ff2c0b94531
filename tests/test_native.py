"""The fused C focal kernels: equal to the torch composite, chunked over threads, built once,
and a clean fallback when they cannot be built."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from losslab.errors import UserError
from losslab.losses import LOSSES
from losslab.losses import functional as LF
from losslab.native import build
from losslab.native import focal as nf
from losslab.native import norms as native_norms

TOL = {torch.float32: {"rtol": 2e-5, "atol": 1e-7}, torch.float64: {"rtol": 1e-10, "atol": 1e-14}}


def logits(n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=g, dtype=torch.float64) * 6
    z[:6] = torch.tensor([100.0, -100.0, 100.0, -100.0, 30.0, -30.0])
    return z.to(dtype)


def targets(kind: str, n: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    hard = torch.rand(n, generator=g) > 0.5
    hard[:6] = torch.tensor([True, True, False, False, True, False])
    return {"long": hard.long(), "bool": hard, "int32": hard.int(), "float": hard.to(dtype),
            "soft": torch.rand(n, generator=g, dtype=torch.float64).to(dtype)}[kind]


def reference(z: torch.Tensor, fn, scale: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, d value / dz) by autograd through the composite, in float64."""
    zz = z.double().requires_grad_()
    per = fn(zz)
    value = per if scale is None else per.sum() * scale
    value.sum().backward()
    return value.detach().to(z.dtype), zz.grad.to(z.dtype)


def test_kernels_build_here() -> None:
    assert nf.available(), "cc + libmvec are on this machine: the kernels must build"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["long", "bool", "int32", "float", "soft"])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("alpha", [None, (0.75, 0.25)])
@pytest.mark.parametrize("scale", [None, 1 / 257, 1.0])
def test_binary_kernel_equals_composite(dtype, kind, gamma, alpha, scale) -> None:
    z, y = logits(257, dtype), targets(kind, 257, dtype)
    a_neg, a_pos = alpha or (None, None)
    value, grad = nf.binary(z, y, gamma, a_neg, a_pos, scale, want_grad=True)
    ref_value, ref_grad = reference(
        z, lambda p: LF.focal_binary_composite(p, y, gamma, a_neg, a_pos), scale)
    torch.testing.assert_close(value, ref_value, **TOL[dtype])
    torch.testing.assert_close(grad, ref_grad, **TOL[dtype])
    assert torch.isfinite(grad).all() and value.dtype == dtype
    # no gradient asked: none computed, the same value
    value2, none = nf.binary(z, y, gamma, a_neg, a_pos, scale, want_grad=False)
    assert none is None
    torch.testing.assert_close(value2, value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("alpha", ["none", "per_class", "scalar"])
@pytest.mark.parametrize("scale", [None, 1 / 64])
def test_multiclass_kernel_equals_composite(dtype, gamma, alpha, scale) -> None:
    g = torch.Generator().manual_seed(2)
    z = (torch.randn(64, 7, generator=g, dtype=torch.float64) * 5).to(dtype)
    z[0] = torch.tensor([100.0, -100.0, 0, 0, 0, 0, 0])  # saturated, correct
    z[1] = torch.tensor([-100.0, 100.0, 0, 0, 0, 0, 0])  # saturated, wrong
    y = torch.randint(0, 7, (64,), generator=g)
    y[:2] = 0
    a = {"none": None, "per_class": torch.rand(7, generator=g, dtype=torch.float64).to(dtype),
         "scalar": torch.tensor(0.3, dtype=dtype)}[alpha]
    value, grad = nf.multiclass(z, y, gamma, a, scale, want_grad=True)
    ref_value, ref_grad = reference(
        z, lambda p: LF.focal_multiclass_composite(p, y, gamma, None if a is None else
                                                   a.double()), scale)
    torch.testing.assert_close(value, ref_value, **TOL[dtype])
    torch.testing.assert_close(grad, ref_grad, **TOL[dtype])


def test_multiclass_single_class_is_zero() -> None:
    value, grad = nf.multiclass(torch.randn(5, 1), torch.zeros(5, dtype=torch.long), 2.0, None,
                                None, want_grad=True)
    assert torch.equal(value, torch.zeros(5)) and torch.equal(grad, torch.zeros(5, 1))


def test_chunks_over_threads_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    z, y = logits(5000, torch.float64), targets("soft", 5000, torch.float64)
    zm, ym = torch.randn(900, 11, dtype=torch.float64), torch.randint(0, 11, (900,))
    one = nf.binary(z, y, 2.0, 0.75, 0.25, 1.0, True), nf.multiclass(zm, ym, 2.0, None, None, True)
    threads = torch.get_num_threads()
    monkeypatch.setattr(nf, "MIN_CHUNK", 1000)
    torch.set_num_threads(3)
    try:
        assert len(nf._chunks(5000, 1)) == 3
        many = (nf.binary(z, y, 2.0, 0.75, 0.25, 1.0, True),
                nf.multiclass(zm, ym, 2.0, None, None, True))
    finally:
        torch.set_num_threads(threads)
    for (v1, g1), (v2, g2) in zip(one, many, strict=True):
        torch.testing.assert_close(v1, v2, rtol=1e-12, atol=0)
        assert torch.equal(g1, g2)


def test_bad_label_in_a_later_batch_is_a_user_error() -> None:
    fn = LOSSES.build("focal", reduction="none")
    fn(torch.randn(8, 10), torch.randint(0, 10, (8,)))  # first call: shapes checked
    with pytest.raises(IndexError, match="out of bounds"):
        nf.multiclass(torch.randn(8, 10), torch.full((8,), 10), 2.0, None, None, True)
    with pytest.raises(UserError, match=r"loss 'focal'.*labels in \[0, 10\)"):
        fn(torch.randn(8, 10), torch.tensor([0, 1, 2, 10, 0, 0, 0, 0]))


def test_training_losses_take_the_native_path() -> None:
    z = torch.randn(16, requires_grad=True)
    out = LOSSES.build("focal")(z, torch.rand(16) > 0.5)
    assert type(out.grad_fn).__name__.startswith("_FocalBinaryNative")
    zm, ym = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 4, (16,))
    a, b = zm.clone().requires_grad_(), zm.clone().requires_grad_()
    out = LOSSES.build("focal", reduction="none")(a, ym)
    assert type(out.grad_fn).__name__.startswith("_FocalMulticlassNative")
    # double backward (Hessian-vector products) differentiates the composite: same H v
    v = torch.randn_like(zm)
    (ga,) = torch.autograd.grad(out.sum(), a, create_graph=True)
    (gb,) = torch.autograd.grad(LF.focal_multiclass_composite(b, ym, 2.0, torch.tensor(
        0.25, dtype=torch.float64)).sum(), b, create_graph=True)
    torch.testing.assert_close(torch.autograd.grad((ga * v).sum(), a)[0],
                               torch.autograd.grad((gb * v).sum(), b)[0])


@pytest.fixture
def fresh_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty kernel cache and cleared in-process caches (restored afterwards)."""
    monkeypatch.setenv("LOSSLAB_NATIVE_CACHE", str(tmp_path / "cache"))
    build.load.cache_clear()
    nf._function.cache_clear()
    yield tmp_path / "cache"
    build.load.cache_clear()
    nf._function.cache_clear()


def test_built_once_then_reused(fresh_build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert build.load("focal") is not None
    (lib,) = fresh_build.glob("focal-*.so")
    assert not list(fresh_build.glob(".focal-*"))  # no temporary file left behind
    build.load.cache_clear()

    def no_compile(*args, **kwargs):
        raise AssertionError("recompiled although the library is cached")

    monkeypatch.setattr(build, "compile_library", no_compile)
    assert build.load("focal") is not None and list(fresh_build.glob("focal-*.so")) == [lib]


def test_failed_build_falls_back_to_torch(fresh_build: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(build, "FLAGS", (*build.FLAGS, "-fno-such-flag-losslab"))
    with caplog.at_level(logging.WARNING, logger="losslab.native.build"):
        assert not nf.available()
    assert "could not be built" in caplog.text and "LOSSLAB_NATIVE=0" in caplog.text
    z = torch.randn(32, requires_grad=True)
    out = LOSSES.build("focal")(z, torch.rand(32) > 0.5)
    assert not type(out.grad_fn).__name__.startswith("_FocalBinaryNative")
    out.backward()
    assert torch.isfinite(z.grad).all()


def test_no_compiler_or_disabled_means_torch(fresh_build: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "compiler", lambda: None)
    assert build.load("focal") is None
    build.load.cache_clear()
    monkeypatch.undo()
    monkeypatch.setenv("LOSSLAB_NATIVE_CACHE", str(fresh_build))
    monkeypatch.setenv("LOSSLAB_NATIVE", "0")
    assert build.load("focal") is None and not list(fresh_build.glob("*.so"))


def test_unwritable_cache_builds_in_the_temp_folder(fresh_build: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fresh_build.parent.mkdir(parents=True, exist_ok=True)
    fresh_build.write_text("a file where the cache folder should be")
    real = build.compile_library

    def compile_or_refuse(name: str, cc: str, target: Path) -> None:
        if target.parent == fresh_build:
            raise PermissionError(13, "Permission denied", str(target.parent))
        real(name, cc, target)

    monkeypatch.setattr(build, "compile_library", compile_or_refuse)
    lib = build.load("focal")
    assert lib is not None and "losslab-native-" in lib._name


# ----------------------------------------------------------------------------- norms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_norms_equal_torch(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    tensors = [torch.randn(shape, generator=g, dtype=dtype) * 10 for shape in
               [(256, 40), (256,), (7,), (0,), (3, 5, 7)]]
    ours = native_norms.norms(tensors)
    assert ours is not None and ours.dtype == torch.float32
    ref = torch.stack([n.float() for n in torch._foreach_norm(tensors, 2.0)])
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    before = [t + 0.01 * torch.randn(t.shape, generator=g, dtype=dtype) for t in tensors]
    delta, weight = native_norms.diff_norms(tensors, before)
    torch.testing.assert_close(weight, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(delta, torch.stack([torch.dist(a, b).float() for a, b in
                                                   zip(tensors, before, strict=True)]),
                               rtol=1e-5, atol=0)


def test_norms_non_finite_and_large_values() -> None:
    big = torch.full((4,), 1e20)  # squares overflow float32; accumulated in float64: finite
    ours = native_norms.norms([big, torch.tensor([1.0, float("nan")]),
                               torch.tensor([float("inf"), 1.0])])
    assert ours[0] == pytest.approx(2e20, rel=1e-6)
    assert torch.isnan(ours[1]) and torch.isinf(ours[2])


def test_float32_blocks_are_exact_enough_and_rescue_overflow() -> None:
    """float32 sums per 2048-entry block, blocks summed in double: lengths across block edges
    match a float64 reference to float32 rounding; a block whose float32 sum overflows (entries
    ~1e18) is redone in double, in the norms and in the update norms."""
    g = torch.Generator().manual_seed(5)
    tensors = [torch.randn(n, generator=g) * 3 for n in (2047, 2048, 2049, 3 * 2048 + 5, 70001)]
    ref = torch.stack([t.double().norm() for t in tensors]).float()
    torch.testing.assert_close(native_norms.norms(tensors), ref, rtol=3e-7, atol=0)
    loud = torch.randn(5000, generator=g)
    loud[4000:4010] = 1e18  # 10 squares of 1e36 overflow a float32 block sum
    expected = loud.double().norm().item()
    assert native_norms.norms([loud])[0].item() == pytest.approx(expected, rel=1e-6)
    delta, weight = native_norms.diff_norms([loud], [torch.zeros(5000)])
    assert weight[0].item() == pytest.approx(expected, rel=1e-6)
    assert delta[0].item() == pytest.approx(expected, rel=1e-6)


def test_grad_stats_torch_path_equals_native(monkeypatch: pytest.MonkeyPatch) -> None:
    from losslab.callbacks import grad_stats as gs

    tensors = [torch.randn(5, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    native = gs.foreach_norms(tensors)
    monkeypatch.setattr(native_norms, "norms", lambda tensors, numels=None: None)
    torch.testing.assert_close(gs.foreach_norms(tensors), native)  # float64 too
    torch.testing.assert_close(gs.foreach_norms([t.float() for t in tensors]), native)


def test_norms_decline_what_they_cannot_take() -> None:
    x = torch.randn(4, 4)
    assert native_norms.norms([x, x.double()]) is None  # mixed dtypes
    assert native_norms.norms([x.t()]) is None  # not contiguous
    assert native_norms.norms([x.half()]) is None
    assert native_norms.norms([]) is None
    assert native_norms.diff_norms([x], [torch.randn(3)]) is None


def test_grouped_norms_equal_the_torch_packing() -> None:
    from losslab.callbacks.grad_stats import packed_mask, packed_norms

    g = torch.Generator().manual_seed(4)
    tensors = [torch.randn(n, generator=g) for n in (30, 7, 12, 5, 1)]
    groups = (0, 0, 2, 1, 2)
    out = native_norms.grouped_norms(tensors, tuple(t.numel() for t in tensors), groups, 3)
    per = torch.stack(torch._foreach_norm(tensors, 2.0))
    torch.testing.assert_close(out[:5], per)
    ref = packed_norms(per, packed_mask(torch.tensor(groups), 3))  # [total, group 0, 1, 2]
    torch.testing.assert_close(out[5:], ref)
    tensors[3][0] = float("nan")  # a NaN stays in its own group (and the total)
    out = native_norms.grouped_norms(tensors, tuple(t.numel() for t in tensors), groups, 3)
    assert torch.isnan(out[5]) and torch.isnan(out[7]) and torch.isfinite(out[[6, 8]]).all()


def test_prepared_grouped_norms_equal_the_unprepared_call_and_decline_bad_tensors() -> None:
    g = torch.Generator().manual_seed(6)
    tensors = [torch.randn(n, generator=g) for n in (30, 7, 12, 5)]
    numels, groups = tuple(t.numel() for t in tensors), (0, 1, 1, 0)
    plan = native_norms.GroupedNorms.prepare(numels, groups, 2, torch.float32)
    assert plan is not None
    ref = native_norms.grouped_norms(tensors, numels, groups, 2)
    assert plan(tensors) == ref.tolist()  # the same kernel: bit for bit
    tensors[1] = tensors[1] * 3  # new tensors (as after the next backward): read again
    ref = native_norms.grouped_norms(tensors, numels, groups, 2)
    assert plan(tensors) == ref.tolist()
    square = torch.randn(6, 5, generator=g)
    assert plan([*tensors[:3], square.t()[0]]) is None  # not contiguous
    assert plan([*tensors[:3], tensors[3].double()]) is None  # another dtype
    assert plan([*tensors[:3], torch.empty(5, device="meta")]) is None  # not on the CPU
    sparse = torch.sparse_coo_tensor([[0]], [1.0], (5,))
    assert plan([*tensors[:3], sparse]) is None
    with pytest.raises(ValueError):  # a different number of tensors is a caller's bug
        plan(tensors[:3])
    assert native_norms.GroupedNorms.prepare(numels, groups, 2, torch.float16) is None
    assert native_norms.GroupedNorms.prepare((), (), 1, torch.float32) is None
    double = native_norms.GroupedNorms.prepare(numels, groups, 2, torch.float64)
    assert double is not None
    torch.testing.assert_close(torch.tensor(double([t.double() for t in tensors])),
                               ref, rtol=1e-6, atol=0)


def test_extension_call_equals_the_ctypes_call() -> None:
    """Where fastcall.c builds (Python.h present), the plan's call is the extension's: the same
    floats as the ctypes call for float32 and float64 (NaN/Inf included), the same declines
    and errors, and no reference leaked per call."""
    import sys

    if build.load_module("fastcall") is None:
        pytest.skip("the extension module does not build here (no Python.h); the ctypes "
                    "call is covered by the test above")
    g = torch.Generator().manual_seed(8)
    for dtype in (torch.float32, torch.float64):
        tensors = [torch.randn(n, generator=g, dtype=dtype) for n in (3000, 7, 129, 1, 64)]
        tensors[2][5] = float("inf")
        numels, groups = tuple(t.numel() for t in tensors), (2, 0, 1, 1, 2)
        fast = native_norms.GroupedNorms.prepare(numels, groups, 3, dtype)
        slow = native_norms.GroupedNorms(fast._fn, numels, groups, 3, dtype, fast=False)
        assert fast._fast is not None and slow._fast is None
        assert fast(tensors) == slow(tensors)  # bit for bit (the same kernel)
        tensors[0] = tensors[0] * 2
        assert fast(tensors) == slow(tensors)
        tensors[1][0] = float("nan")
        got = fast(tensors)
        assert got == pytest.approx(slow(tensors), nan_ok=True) and math.isnan(got[1])
        other = torch.float64 if dtype == torch.float32 else torch.float32
        for bad in (torch.randn(8, 8, dtype=dtype).t()[0], torch.randn(64, dtype=other),
                    torch.empty(64, dtype=dtype, device="meta")):
            assert fast([*tensors[:4], bad]) is None and slow([*tensors[:4], bad]) is None
        with pytest.raises(ValueError):
            fast(tensors[:3])
        with pytest.raises(AttributeError):
            fast([*tensors[:4], None])
        before = [sys.getrefcount(t) for t in tensors]
        for _ in range(200):
            fast(tensors)
        assert [sys.getrefcount(t) for t in tensors] == before


def test_extension_module_missing_headers_or_disabled(fresh_build: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Python.h (or with LOSSLAB_NATIVE=0) there is no extension module, and a plan
    makes the ctypes call, with the same result."""
    build.load_module.cache_clear()
    monkeypatch.setattr(build, "python_include", lambda: fresh_build / "no-include")
    assert build.load_module("fastcall") is None
    assert not list(fresh_build.glob("fastcall-*.so"))
    tensors = [torch.randn(n) for n in (10, 3)]
    plan = native_norms.GroupedNorms.prepare((10, 3), (0, 0), 1, torch.float32)
    assert plan is not None and plan._fast is None
    expect = math.sqrt(sum(float(t.pow(2).sum()) for t in tensors))
    assert plan(tensors)[2] == pytest.approx(expect, rel=1e-6)
    build.load_module.cache_clear()
    monkeypatch.undo()
    monkeypatch.setenv("LOSSLAB_NATIVE_CACHE", str(fresh_build))
    monkeypatch.setenv("LOSSLAB_NATIVE", "0")
    assert build.load_module("fastcall") is None
    build.load_module.cache_clear()


@pytest.mark.parametrize("fast", [True, False])
def test_prepared_diff_norms_equal_the_unprepared_call(fast: bool) -> None:
    """`DiffNorms` (the update ratio's pass against fixed snapshot buffers) gives the floats of
    `diff_norms` bit for bit, through the extension or ctypes; it declines a tensor of another
    size, dtype or layout; a different number of tensors is an error."""
    g = torch.Generator().manual_seed(9)
    for dtype in (torch.float32, torch.float64):
        snaps = [torch.randn(n, generator=g, dtype=dtype) for n in (3000, 7, 129, 1)]
        live = [s + 1e-3 * torch.randn(s.shape, generator=g, dtype=dtype) for s in snaps]
        prepared = native_norms.DiffNorms.prepare(snaps)
        assert prepared is not None
        plan = native_norms.DiffNorms(prepared._fn, snaps, fast=fast)
        assert (plan._fast is not None) == (fast and build.load_module("fastcall") is not None)
        delta, weight = native_norms.diff_norms(live, snaps)
        assert plan(live) == [*delta.tolist(), *weight.tolist()]
        live[1].mul_(2)  # in place, as the optimizer moves the weights
        delta, weight = native_norms.diff_norms(live, snaps)
        assert plan(live) == [*delta.tolist(), *weight.tolist()]
        other = torch.float64 if dtype == torch.float32 else torch.float32
        for bad in (torch.randn(3001, dtype=dtype), torch.randn(3000, dtype=other),
                    torch.randn(3000, 2, dtype=dtype)[:, 0]):  # size, dtype, strides
            assert plan([bad, *live[1:]]) is None
        with pytest.raises(ValueError):
            plan(live[:2])
    assert native_norms.DiffNorms.prepare([]) is None
    assert native_norms.DiffNorms.prepare([torch.randn(3, dtype=torch.float16)]) is None


@pytest.mark.parametrize("fast", [True, False])
def test_grouped_norms_plan_declines_a_tensor_of_another_size(fast: bool) -> None:
    """The kernel reads the planned number of entries: a tensor of another size (a parameter
    resized after the plan was made) is declined, never read past its end."""
    tensors = [torch.randn(10), torch.randn(3)]
    prepared = native_norms.GroupedNorms.prepare((10, 3), (0, 0), 1, torch.float32)
    assert prepared is not None
    plan = native_norms.GroupedNorms(prepared._fn, (10, 3), (0, 0), 1, torch.float32,
                                     fast=fast)
    assert plan(tensors) is not None
    assert plan([tensors[0], torch.randn(2)]) is None
    assert plan([torch.randn(11), tensors[1]]) is None
