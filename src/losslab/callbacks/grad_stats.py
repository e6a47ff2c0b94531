"""Gradient statistics, computed once per optimizer step and shared by every reader.

`grad_stats(pl_module)` is called from `on_before_optimizer_step` (after AMP unscaling and DDP's
all-reduce, so on the gradients the optimizer will use). Everything stays on the device: nothing
here calls `.item()`/`.cpu()` (except `GradStats.host_row`, which readers call on CPU only,
where a read is free). The result is cached on the module for the step, so the monitor, the
health detector and the clipper read one computation: one fused norm kernel over the gradients;
the per-layer/total vector (`packed`) is built only when a reader asks for it. For parameters p
grouped by their owning module ("layer", e.g. `model.blocks.0.linear`):

    ||g_p||      = sqrt(sum g_p^2)                                  (torch._foreach_norm)
    ||g_layer||  = sqrt(sum_{p in layer} ||g_p||^2)
    ||g||_total  = sqrt(sum_p ||g_p||^2)           (== torch.nn.utils.get_total_norm(grads))
    finite       = ||g||_total is finite           (False for any NaN/Inf entry, or an overflow)

The cache is invalidated when the step changes or the gradients change (a new gradient tensor,
as after `zero_grad(set_to_none=True)` + backward, or an in-place edit such as clipping, which
bumps the tensors' version counters), so LBFGS-style optimizers that re-run the closure within
one step, and readers after clipping, see fresh values.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from losslab.callbacks.trainer_reads import global_step
from losslab.native import norms as native_norms

_LAYOUT_ATTR = "_losslab_grad_layout"
_CACHE_ATTR = "_losslab_grad_stats"
_CPU = torch.device("cpu")


@dataclass
class Layout:
    """Trainable parameters grouped by owning module; built once per fit (see `reset_layout`)."""

    params: list[nn.Parameter]
    param_names: list[str]
    layer_names: tuple[str, ...]
    layer_of_param: list[int]
    all_params: tuple[int, ...] = ()  # (0, 1, ..., P - 1): `keep` when every gradient exists
    numels: tuple[int, ...] = ()  # each parameter's (and so its gradient's) number of entries
    layer_ids: tuple[int, ...] = ()  # layer_of_param as a tuple
    _index: dict[tuple[torch.device, tuple[int, ...]], tuple[Tensor, Tensor]] = field(
        default_factory=dict)
    _cpu_all: tuple[Tensor, Tensor] | None = None
    _plan: native_norms.GroupedNorms | None = None
    _planned: bool = False
    _host_fields: dict[str, object] | None = None

    def norm_plan(self) -> native_norms.GroupedNorms | None:
        """The native per-step call for these parameters' gradients (prepared on first use;
        None unless they are all CPU float32/64 tensors and the kernel is built)."""
        if not self._planned:
            self._planned = True
            dtype = self.params[0].dtype if self.params else None
            if dtype is not None and all(p.dtype is dtype and p.is_cpu for p in self.params):
                self._plan = native_norms.GroupedNorms.prepare(
                    self.numels, self.layer_ids, len(self.layer_names), dtype)
        return self._plan

    def host_norms(self, grads: list[Tensor]) -> list[float] | None:
        """[||g_p|| per parameter, ||g||_total, ||g_layer|| per layer] as floats from the native
        kernel (`norm_plan`); None where there is none."""
        plan = self._plan if self._planned else self.norm_plan()
        return None if plan is None else plan(grads)

    def host_stats(self, step: int, host: list[float]) -> GradStats:
        """The step's GradStats from `host_norms`' floats: the fields that do not change from
        step to step are built once per layout and copied: ~8 us in the training loop against
        ~18 us for the dataclass constructor, which runs with the interpreter's caches cold
        after backward. A new GradStats field must be added here too (a test checks)."""
        fields = self._host_fields
        if fields is None:
            index, mask = self.index(_CPU, self.all_params)
            fields = self._host_fields = {
                "layer_names": self.layer_names, "_param_norms": None, "params": self.params,
                "param_names": self.param_names, "param_layer": index,
                "param_layer_ids": self.layer_of_param, "mask": mask, "device": _CPU,
                "layer_weight_norms": None, "_packed": None, "on_cpu": True}
        num = len(self.params)
        stats = object.__new__(GradStats)
        stats.__dict__ = {**fields, "step": step, "_row": host[num:], "_host_norms": host[:num]}
        return stats

    def index(self, device: torch.device, keep: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """(layer id of each kept parameter, `packed_mask`) on `device` (cached)."""
        if keep is self.all_params and device is _CPU and self._cpu_all is not None:
            return self._cpu_all  # the per-step case: no key to hash
        key = (device, keep)
        if key not in self._index:
            ids = [self.layer_of_param[i] for i in keep]
            index = torch.tensor(ids, dtype=torch.long, device=device)
            self._index[key] = (index, packed_mask(index, len(self.layer_names)))
            if keep is self.all_params and device is _CPU:
                self._cpu_all = self._index[key]
        return self._index[key]


@dataclass
class GradStats:
    """Gradient statistics of one optimizer step.

    `layer_names[i]` names `layer_grad_norms[i]` (and `layer_weight_norms[i]`); layers whose
    parameters have no gradient this step are absent. `packed` is [total, layer norms...] in
    one tensor, built on first use; `total_norm` and `layer_grad_norms` are views of it. On CPU,
    `host_row()` gives the same values as floats (what the monitor and the health detector use
    there: no further kernels per step); with the native kernel the step's norms arrive as host
    floats, and `param_grad_norms` / `packed` become tensors only when a reader asks for them.
    `params`/`param_grad_norms` are per parameter tensor, in the same order; `param_layer`
    (device) and `param_layer_ids` (host) give each parameter's layer index.
    """

    step: int
    layer_names: tuple[str, ...]
    _param_norms: Tensor | None
    params: list[nn.Parameter]
    param_names: list[str]
    param_layer: Tensor
    param_layer_ids: list[int]
    mask: Tensor
    device: torch.device
    layer_weight_norms: Tensor | None = None
    _packed: Tensor | None = None
    _row: list[float] | None = None
    _host_norms: list[float] | None = None
    on_cpu: bool = field(init=False)  # reading the values is free (no device sync)

    def __post_init__(self) -> None:
        self.on_cpu = self.device.type == "cpu"

    @property
    def param_grad_norms(self) -> Tensor:
        """[P] float32 ||g_p|| per parameter tensor (a device tensor)."""
        if self._param_norms is None:
            self._param_norms = torch.tensor(self._host_norms, dtype=torch.float32)
        return self._param_norms

    @property
    def packed(self) -> Tensor:
        """[||g||, ||g_layer||...] as one device tensor (two kernels, on first use)."""
        if self._packed is None:
            if self._row is not None and self.on_cpu:
                self._packed = torch.tensor(self._row, dtype=torch.float32)
            else:
                self._packed = packed_norms(self.param_grad_norms, self.mask)
        return self._packed

    @property
    def total_norm(self) -> Tensor:
        return self.packed[0]

    @property
    def layer_grad_norms(self) -> Tensor:
        return self.packed[1:]

    def host_row(self) -> list[float]:
        """[||g||, ||g_layer||...] as Python floats, for CPU tensors: one read of the
        per-parameter norms, then sums of squares in float64 on the host (no more kernels).
        Call it only where reading the values is free (CPU); on a device it would sync."""
        if self._row is None:
            sq = [v * v for v in self.param_grad_norms.tolist()]
            layers = [0.0] * len(self.layer_names)
            for layer, v in zip(self.param_layer_ids, sq, strict=True):
                layers[layer] += v
            self._row = [math.sqrt(sum(sq)), *(math.sqrt(v) for v in layers)]
        return self._row

    @property
    def grads(self) -> list[Tensor]:
        return [p.grad for p in self.params]  # type: ignore[misc]

    @property
    def finite(self) -> Tensor:
        """0-d bool tensor: every gradient entry is finite (||g||_total is finite)."""
        return torch.isfinite(self.total_norm)


def layer_name(param_name: str) -> str:
    """`model.blocks.0.linear.weight` -> `model.blocks.0.linear`; root parameters keep theirs."""
    owner, _, _ = param_name.rpartition(".")
    return owner or param_name


def build_layout(module: nn.Module) -> Layout:
    """Group the trainable parameters of `module` by the module that owns them."""
    params, names, layer_of, layers = [], [], [], {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        layer = layer_name(name)
        layer_of.append(layers.setdefault(layer, len(layers)))
        params.append(p)
        names.append(name)
    return Layout(params, names, tuple(layers), layer_of, tuple(range(len(params))),
                  tuple(p.numel() for p in params), tuple(layer_of))


def get_layout(module: nn.Module) -> Layout:
    layout = getattr(module, _LAYOUT_ATTR, None)
    if layout is None:
        layout = build_layout(module)
        object.__setattr__(module, _LAYOUT_ATTR, layout)
    return layout


def reset_layout(module: nn.Module) -> None:
    """Forget the cached layout and statistics (call when the parameter set may have changed)."""
    for attr in (_LAYOUT_ATTR, _CACHE_ATTR):
        if hasattr(module, attr):
            object.__delattr__(module, attr)


def current_step(module: nn.Module) -> int:
    trainer = getattr(module, "_trainer", None)
    return global_step(trainer) if trainer is not None else -1


def group_norms(per_param: Tensor, index: Tensor, num_groups: int,
                zeros: Tensor | None = None, squared: Tensor | None = None) -> Tensor:
    """sqrt(sum of squared norms) per group: the L2 norm of the concatenated group."""
    if zeros is None:
        zeros = torch.zeros(num_groups, dtype=per_param.dtype, device=per_param.device)
    sq = per_param.square() if squared is None else squared
    return torch.index_add(zeros, 0, index, sq).sqrt()


def packed_mask(index: Tensor, num_groups: int) -> Tensor:
    """[1 + num_groups, P] bool: row 0 selects every parameter, row 1 + g those of group g."""
    groups = torch.arange(num_groups, device=index.device).unsqueeze(1) == index.unsqueeze(0)
    return torch.cat([torch.ones_like(groups[:1]), groups])


def packed_norms(per_param: Tensor, mask: Tensor) -> Tensor:
    """[||all||, ||group_0||, ...] from per-tensor norms: the norm of each mask row's entries.
    Two kernels (a select, a row norm); a NaN/Inf shows only in the rows that contain it."""
    return torch.linalg.vector_norm(torch.where(mask, per_param, 0.0), dim=1)


def foreach_norms(tensors: list[Tensor], numels: tuple[int, ...] | None = None) -> Tensor:
    """[len(tensors)] float32 L2 norms, computed with one fused kernel per device (on CPU the
    native kernel of losslab/native/norms.c when it is built: ~2x faster on warm memory).
    `numels`: the tensors' sizes, when known."""
    fast = native_norms.norms(tensors, numels)
    if fast is not None:
        return fast
    if any(t.dtype == torch.float64 for t in tensors):  # the norm cannot narrow float64
        norms = [n.float() for n in torch._foreach_norm(tensors, 2.0)]
    else:
        norms = torch._foreach_norm(tensors, 2.0, dtype=torch.float32)
    try:
        return torch.stack(norms)
    except RuntimeError:  # parameters on several devices (model parallel): gather on the first
        device = norms[0].device
        return torch.stack([n.to(device) for n in norms])


def grad_stats(module: nn.Module, weights: bool = False) -> GradStats | None:
    """The step's gradient statistics (cached); None when no parameter has a gradient.

    `weights=True` also fills `layer_weight_norms` (||w_layer||, one more fused pass over the
    parameters); callers ask for it only when they log.
    """
    layout = get_layout(module)
    step = current_step(module)
    grads = [p.grad for p in layout.params]
    try:  # the cache key: any new gradient tensor or in-place edit changes the version sum
        version = sum([g._version for g in grads])  # type: ignore[union-attr]
        keep = layout.all_params
    except AttributeError:  # some parameters have no gradient (None)
        keep = tuple(i for i, g in enumerate(grads) if g is not None)
        if not keep:
            return None
        grads = [grads[i] for i in keep]
        version = sum([g._version for g in grads])  # type: ignore[union-attr]
    if not keep:
        return None
    cached = getattr(module, _CACHE_ATTR, None)
    if cached is not None and cached[0] == step and cached[1]() is grads[0] \
            and cached[2] == version and cached[3] == keep:
        stats: GradStats = cached[4]
    elif keep is layout.all_params:  # the layout's own lists, shared (GradStats never mutates)
        host = layout.host_norms(grads)  # type: ignore[arg-type]
        if host is not None:  # CPU kernel: per-parameter, total and layer norms as floats
            stats = layout.host_stats(step, host)  # (tensors on request)
        else:
            per_param = foreach_norms(grads)  # type: ignore[arg-type]
            index, mask = layout.index(per_param.device, keep)
            stats = GradStats(
                step=step, layer_names=layout.layer_names, _param_norms=per_param,
                params=layout.params, param_names=layout.param_names, param_layer=index,
                param_layer_ids=layout.layer_of_param, mask=mask, device=per_param.device)
        _remember(module, step, grads, version, keep, stats)
    else:  # some parameters have no gradient: renumber the layers that have one
        per_param = foreach_norms(grads)  # type: ignore[arg-type]
        used = sorted({layout.layer_of_param[i] for i in keep})
        remap = {old: new for new, old in enumerate(used)}
        ids = [remap[layout.layer_of_param[i]] for i in keep]
        index = torch.tensor(ids, dtype=torch.long, device=per_param.device)
        names = tuple(layout.layer_names[i] for i in used)
        mask = packed_mask(index, len(used))
        stats = GradStats(
            step=step, layer_names=names, _param_norms=per_param,
            params=[layout.params[i] for i in keep],
            param_names=[layout.param_names[i] for i in keep], param_layer=index,
            param_layer_ids=list(ids), mask=mask, device=per_param.device)
        _remember(module, step, grads, version, keep, stats)
    if weights and stats.layer_weight_norms is None:
        stats.layer_weight_norms = weight_norms(stats)
    return stats


def _remember(module: nn.Module, step: int, grads: list[Tensor], version: int,
              keep: tuple[int, ...], stats: GradStats) -> None:
    """Cache `stats` for `grad_stats(module)` until the step or the gradients change."""
    object.__setattr__(module, _CACHE_ATTR, (step, weakref.ref(grads[0]), version, keep, stats))


def share_host_norms(module: nn.Module, step: int, grads: list[Tensor],
                     host: list[float]) -> None:
    """Cache the step's statistics from `host`, the native call's floats for every parameter's
    gradient `grads` (as `Layout.host_norms` returns them), so that `grad_stats(module)` reads
    them instead of making the same call again (FastStep computes them first)."""
    layout = get_layout(module)
    version = sum([g._version for g in grads])
    _remember(module, step, grads, version, layout.all_params, layout.host_stats(step, host))


def weight_norms(stats: GradStats) -> Tensor:
    """||w_layer|| for the layers of `stats` (one fused pass over the parameters)."""
    with torch.no_grad():
        per_param = foreach_norms([p.detach() for p in stats.params])
    return group_norms(per_param, stats.param_layer, len(stats.layer_names))


class UpdateTracker:
    """||delta w_layer|| / ||w_layer|| of one optimizer step, measured on request.

    `before(stats)` copies the parameters into reusable buffers (one fused copy); `after()`
    computes ||w_after - w_before|| and ||w_after|| per layer in one fused norm kernel and
    returns (||w_layer||, ||delta w_layer|| / ||w_layer||), both after the step (the ratio
    differs from one with ||w_before|| by O(ratio)). Only used on logging steps: it costs one
    model's worth of memory and three passes over the parameters.
    """

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps
        self._buffers: list[Tensor] | None = None
        self._params: list[nn.Parameter] = []
        self._stats: GradStats | None = None
        self._index: Tensor | None = None
        self._plan: native_norms.DiffNorms | None = None  # the native pass against the buffers

    def before(self, stats: GradStats) -> None:
        params = stats.params
        if params is not self._params and (
                self._buffers is None or len(self._params) != len(params) or any(
                    a is not b for a, b in zip(self._params, params, strict=True))):
            self._buffers = [torch.empty_like(p) for p in params]
            self._params = params  # (the layout's list: the same object every step)
            self._index = None
            self._plan = native_norms.DiffNorms.prepare(self._buffers)
        with torch.no_grad():  # (faster than a native memcpy per tensor, measured)
            torch._foreach_copy_(self._buffers, params)
        self._stats = stats

    @property
    def pending(self) -> bool:
        return self._stats is not None

    def after(self) -> tuple[Tensor, Tensor] | tuple[list[float], list[float]] | None:
        """(||w_layer||, update ratio per layer) for the step recorded by `before`: device
        tensors, or on CPU (native kernel) lists of floats."""
        stats, self._stats = self._stats, None
        if stats is None or self._buffers is None:
            return None
        num = len(stats.layer_names)
        if self._index is None or self._index.numel() != 2 * len(self._params):
            self._index = torch.cat([stats.param_layer, stats.param_layer + num])
        if self._plan is not None:  # CPU: one native read of both, as host floats
            fast = self._plan(self._params)
            if fast is not None:  # grouped here (no more kernels)
                count = len(self._params)
                return _host_update_ratio(fast[:count], fast[count:], stats.param_layer_ids,
                                          num, self.eps)
        with torch.no_grad():
            params = [p.detach() for p in self._params]
            torch._foreach_sub_(self._buffers, params)
            norms = foreach_norms([*self._buffers, *params])
            both = group_norms(norms, self._index, 2 * num)
        weights = both[num:]
        return weights, both[:num] / weights.clamp_min(self.eps)


def _host_update_ratio(delta: list[float], weight: list[float], layer_ids: list[int], num: int,
                       eps: float) -> tuple[list[float], list[float]]:
    """Per-parameter ||dw||, ||w|| -> per-layer ||w_layer||, ||dw_layer|| / ||w_layer||."""
    d2, w2 = [0.0] * num, [0.0] * num
    for layer, d, w in zip(layer_ids, delta, weight, strict=True):
        d2[layer] += d * d
        w2[layer] += w * w
    weights = [math.sqrt(v) for v in w2]
    return weights, [math.sqrt(d) / max(w, eps) for d, w in zip(d2, weights, strict=True)]
