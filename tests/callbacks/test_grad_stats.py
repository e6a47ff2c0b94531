"""grad_stats against a naive per-parameter computation; caching; the update-ratio tracker."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from losslab.callbacks.grad_stats import (
    GradStats,
    UpdateTracker,
    get_layout,
    grad_stats,
    layer_name,
    reset_layout,
)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))  # a root parameter: its own "layer"
        self.body = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Tanh(), nn.Linear(7, 3))
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.unused = nn.Linear(2, 2)  # never in the graph: no gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.body(x) * self.scale)


def backward(net: nn.Module, seed: int = 0) -> None:
    torch.manual_seed(seed)
    net.zero_grad(set_to_none=True)
    net(torch.randn(16, 5)).pow(2).sum().backward()


def naive(net: nn.Module) -> tuple[dict[str, float], dict[str, float], float]:
    """Per-layer grad and weight norms and the total grad norm, one parameter at a time."""
    g2: dict[str, float] = {}
    w2: dict[str, float] = {}
    for name, p in net.named_parameters():
        if p.grad is None:
            continue
        owner = name.rsplit(".", 1)[0] if "." in name else name
        g2[owner] = g2.get(owner, 0.0) + float((p.grad.double() ** 2).sum())
        w2[owner] = w2.get(owner, 0.0) + float((p.detach().double() ** 2).sum())
    total = math.sqrt(sum(g2.values()))
    return ({k: math.sqrt(v) for k, v in g2.items()}, {k: math.sqrt(v) for k, v in w2.items()},
            total)


def test_layer_names() -> None:
    assert layer_name("model.blocks.0.linear.weight") == "model.blocks.0.linear"
    assert layer_name("scale") == "scale"


def test_matches_naive_per_parameter_computation() -> None:
    net = Net()
    backward(net)
    stats = grad_stats(net, weights=True)
    assert stats is not None
    grads, weights, total = naive(net)
    assert stats.layer_names == ("scale", "body.0", "body.1", "body.3")  # order of registration
    assert list(stats.layer_names) == list(grads)  # frozen and unused layers are absent
    assert stats.layer_grad_norms.tolist() == pytest.approx(list(grads.values()), rel=1e-5)
    assert stats.layer_weight_norms.tolist() == pytest.approx(list(weights.values()), rel=1e-5)
    assert float(stats.total_norm) == pytest.approx(total, rel=1e-5)
    reference = torch.nn.utils.get_total_norm([p.grad for p in net.parameters()
                                               if p.grad is not None])
    assert float(stats.total_norm) == pytest.approx(float(reference), rel=1e-6)
    per_param = [float(p.grad.norm()) for p in stats.params]
    assert stats.param_grad_norms.tolist() == pytest.approx(per_param, rel=1e-5)
    assert bool(stats.finite)


def test_cached_until_the_gradients_change() -> None:
    net = Net()
    backward(net, 0)
    first = grad_stats(net)
    assert grad_stats(net) is first  # same step, same gradients: one computation
    with torch.no_grad():
        net.body[0].weight.grad.mul_(2.0)  # an in-place edit (clipping) bumps the version
    second = grad_stats(net)
    assert second is not first
    assert float(second.total_norm) > float(first.total_norm)
    backward(net, 1)  # new gradient tensors (zero_grad(set_to_none) + backward, as in LBFGS)
    third = grad_stats(net)
    assert third is not second
    assert float(third.total_norm) == pytest.approx(naive(net)[2], rel=1e-5)


def test_non_finite_flag_and_no_gradients() -> None:
    net = Net()
    assert grad_stats(net) is None  # nothing has a gradient yet
    backward(net)
    with torch.no_grad():
        net.body[3].bias.grad[0] = float("inf")
    stats = grad_stats(net)
    assert not bool(stats.finite)
    layers = dict(zip(stats.layer_names, stats.layer_grad_norms.tolist(), strict=True))
    assert math.isinf(layers["body.3"]) and math.isfinite(layers["body.0"])


def test_layout_reset_picks_up_new_parameters() -> None:
    net = Net()
    backward(net)
    assert "extra" not in grad_stats(net).layer_names
    net.extra = nn.Parameter(torch.ones(2))
    net.extra.grad = torch.ones(2)
    reset_layout(net)
    stats = grad_stats(net)
    assert "extra" in stats.layer_names


def test_update_tracker_measures_the_step_taken() -> None:
    net = Net()
    backward(net)
    stats = grad_stats(net)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    tracker = UpdateTracker()
    tracker.before(stats)
    torch.optim.SGD(net.parameters(), lr=0.1).step()
    weights, ratio = tracker.after()
    for i, layer in enumerate(stats.layer_names):
        names = [n for n in before if layer_name(n) == layer]
        params = dict(net.named_parameters())
        delta = math.sqrt(sum(float((params[n].detach() - before[n]).pow(2).sum())
                              for n in names))
        w = math.sqrt(sum(float(params[n].detach().pow(2).sum()) for n in names))
        assert float(weights[i]) == pytest.approx(w, rel=1e-5)
        assert float(ratio[i]) == pytest.approx(delta / w, rel=1e-4)
        # plain SGD: ||delta w|| = lr * ||g||
        assert delta == pytest.approx(0.1 * float(stats.layer_grad_norms[i]), rel=1e-4)
    assert tracker.after() is None  # consumed


def test_prepared_native_call_and_its_fallbacks_agree() -> None:
    """Every parameter has a gradient: the layout's prepared native call gives the norms as
    floats; a gradient the kernel cannot read (transposed, float64) falls back to torch."""
    from losslab.native.build import load

    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2))
    net(torch.randn(8, 6)).pow(2).sum().backward()
    stats = grad_stats(net)
    reference = [float(p.grad.norm()) for p in net.parameters()]
    assert stats.param_grad_norms.tolist() == pytest.approx(reference, rel=1e-6)
    if load("norms") is not None:
        assert stats._host_norms is not None  # the native floats, no tensor made
    weight = net[0].weight
    weight.grad = weight.grad.t().contiguous().t()  # same values, transposed strides
    assert not weight.grad.is_contiguous()
    again = grad_stats(net)
    assert again is not stats and again._host_norms is None  # the torch path
    assert again.param_grad_norms.tolist() == pytest.approx(reference, rel=1e-6)
    assert float(again.total_norm) == pytest.approx(math.sqrt(sum(v * v for v in reference)),
                                                    rel=1e-6)


def test_host_stats_has_the_fields_the_constructor_gives() -> None:
    """`Layout.host_stats` (the per-step CPU path: fixed fields copied from a per-layout dict)
    builds the same GradStats as the dataclass constructor, and each step gets its own."""
    from dataclasses import fields

    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    net(torch.randn(5, 3)).sum().backward()
    layout = get_layout(net)
    num = len(layout.params)
    host = [float(i + 1) for i in range(num + 1 + len(layout.layer_names))]
    index, mask = layout.index(torch.device("cpu"), layout.all_params)
    built = GradStats(step=7, layer_names=layout.layer_names, _param_norms=None,
                      params=layout.params, param_names=layout.param_names, param_layer=index,
                      param_layer_ids=layout.layer_of_param, mask=mask,
                      device=torch.device("cpu"), _row=host[num:], _host_norms=host[:num])
    fast = layout.host_stats(7, host)
    assert type(fast) is GradStats
    for f in fields(GradStats):
        assert getattr(fast, f.name) is getattr(built, f.name) or \
            getattr(fast, f.name) == getattr(built, f.name), f.name
    assert fast.host_row() == host[num:]
    assert fast.param_grad_norms.tolist() == host[:num]
    assert fast.total_norm.item() == host[num]
    other = layout.host_stats(8, host)
    assert other is not fast and other.step == 8 and fast.step == 7
    other.layer_weight_norms = torch.ones(2)  # set on one step's stats only
    assert fast.layer_weight_norms is None
