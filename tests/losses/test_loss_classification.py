"""Classification losses against torch built-ins / the published formulas, and their gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from losslab.losses import LOSSES
from losslab.losses import functional as LF

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def binary_data(n: int = 64, scale: float = 3.0, seed: int = 0):
    g = gen(seed)
    z = torch.randn(n, generator=g, dtype=F64) * scale
    y = (torch.rand(n, generator=g) > 0.4).long()
    return z, y


def multi_data(n: int = 32, c: int = 5, scale: float = 2.0, seed: int = 0):
    g = gen(seed)
    return torch.randn(n, c, generator=g, dtype=F64) * scale, torch.randint(0, c, (n,), generator=g)


@pytest.fixture(params=["native", "torch"])
def focal_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a focal test on the fused C kernel (CPU default) and on the torch Functions (the
    path every other device takes, and the fallback without a C compiler)."""
    if request.param == "native":
        assert LF.native_focal.available(), "the native focal kernel did not build"
    else:
        monkeypatch.setattr(LF.native_focal, "supports", lambda *args, **kwargs: False)
    return request.param


def grad_of(fn, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = pred.clone().requires_grad_()
    fn(pred, target).backward()
    return pred.grad


# ----------------------------------------------------------------------------- bce


def test_bce_matches_torch_and_gradient() -> None:
    z, y = binary_data()
    y = y.to(F64)
    soft = torch.rand(len(z), generator=gen(1), dtype=F64)
    for target in (y, soft):
        for pw in (None, 3.0):
            fn = LOSSES.build("bce", pos_weight=pw, reduction="none")
            ref = F.binary_cross_entropy_with_logits(
                z, target, reduction="none", pos_weight=None if pw is None else
                torch.tensor(pw, dtype=F64))
            torch.testing.assert_close(fn(z, target), ref)
            torch.testing.assert_close(fn(z[:, None], target[:, None]), ref)
    # dL/dz = (sigma(z) - y) / n
    torch.testing.assert_close(grad_of(LOSSES.build("bce"), z, y), (torch.sigmoid(z) - y) / len(z))


def test_bce_stable_at_saturated_logits() -> None:
    z = torch.tensor([-100.0, -100.0, 100.0, 100.0], requires_grad=True)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    loss = LOSSES.build("bce", reduction="none")(z, y)
    torch.testing.assert_close(loss, torch.tensor([0.0, 100.0, 100.0, 0.0]))
    loss.sum().backward()
    torch.testing.assert_close(z.grad, torch.tensor([0.0, -1.0, 1.0, 0.0]))


def test_bce_accepts_integer_labels() -> None:
    z, y = binary_data()
    fn = LOSSES.build("bce", reduction="none")
    torch.testing.assert_close(fn(z, y), fn(z, y.to(F64)))


# ----------------------------------------------------------------------------- ce


def test_ce_matches_torch() -> None:
    z, y = multi_data()
    w = [1.0, 2.0, 0.5, 1.0, 3.0]
    wt = torch.tensor(w, dtype=F64)
    probs = torch.softmax(torch.randn(32, 5, generator=gen(2), dtype=F64), 1)
    for ls in (0.0, 0.2):
        for target in (y, probs):
            fn = LOSSES.build("ce", label_smoothing=ls, class_weights=w, reduction="none")
            ref = F.cross_entropy(z, target, weight=wt, label_smoothing=ls, reduction="none")
            torch.testing.assert_close(fn(z, target), ref)
            total = LOSSES.build("ce", label_smoothing=ls, class_weights=w, reduction="sum")
            torch.testing.assert_close(total(z, target), ref.sum())
    # mean is the plain mean over samples (torch's weighted 'mean' divides by sum_i w_{y_i})
    mean = LOSSES.build("ce", class_weights=w)(z, y)
    torch.testing.assert_close(mean, F.cross_entropy(z, y, weight=wt, reduction="none").mean())
    # whole-number float labels are accepted
    fn = LOSSES.build("ce", reduction="none")
    torch.testing.assert_close(fn(z, y.to(F64)), F.cross_entropy(z, y, reduction="none"))


def test_ce_temperature_and_gradient() -> None:
    z, y = multi_data()
    n, t = len(z), 2.5
    fn = LOSSES.build("ce", temperature=t)
    torch.testing.assert_close(fn(z, y), F.cross_entropy(z / t, y))
    onehot = F.one_hot(y, 5).to(F64)
    # softmax CE: dL/dz = (p - y) / n, and / T with temperature
    torch.testing.assert_close(grad_of(LOSSES.build("ce"), z, y),
                               (torch.softmax(z, 1) - onehot) / n)
    torch.testing.assert_close(grad_of(fn, z, y), (torch.softmax(z / t, 1) - onehot) / (n * t))


def test_confidence_penalty_subtracts_entropy_and_raises_it() -> None:
    z, y = multi_data()
    beta = 0.5
    plain = LOSSES.build("ce", reduction="none")(z, y)
    penalised = LOSSES.build("ce", confidence_penalty=beta, reduction="none")(z, y)
    p = torch.softmax(z, 1)
    entropy = -(p * p.log()).sum(1)
    torch.testing.assert_close(penalised, plain - beta * entropy)
    # a gradient-descent step on the penalty term alone raises the entropy (the notes' "+" would
    # lower it)
    zz = z.clone().requires_grad_()
    pen = LOSSES.build("ce", confidence_penalty=beta, reduction="sum")
    (pen(zz, y) - LOSSES.build("ce", reduction="sum")(zz, y)).backward()
    q = torch.softmax(z - 0.1 * zz.grad, 1)
    assert (-(q * q.log()).sum(1)).sum() > entropy.sum()


# ----------------------------------------------------------------------------- focal


def torchvision_sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss, reduction='none' (alpha < 0 disables alpha)."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss


def softmax_focal(z, y, gamma, alpha=None):
    """Lin et al. 2017 multi-class form: -alpha_y (1 - p_y)^gamma log p_y."""
    logp = torch.log_softmax(z, 1)[torch.arange(len(y)), y]
    a = 1.0 if alpha is None else torch.as_tensor(alpha, dtype=z.dtype)[y]
    return -a * (1 - logp.exp()) ** gamma * logp


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.3])
@pytest.mark.parametrize("alpha", [None, 0.25, 0.9])
@pytest.mark.parametrize("labels", ["long", "float", "bool", "soft"])
def test_binary_focal_equals_torchvision(gamma: float, alpha: float | None, labels: str,
                                         focal_impl: str) -> None:
    z, y = binary_data()
    target = {"long": y, "float": y.to(F64), "bool": y.bool(),
              "soft": torch.rand(len(z), generator=gen(5), dtype=F64)}[labels]
    fn = LOSSES.build("focal", gamma=gamma, alpha=alpha, reduction="none")
    ref = torchvision_sigmoid_focal_loss(z, target.to(F64), -1 if alpha is None else alpha, gamma)
    torch.testing.assert_close(fn(z, target), ref)
    torch.testing.assert_close(fn(z[:, None], target[:, None]), ref)
    # gradients equal autograd through the reference formula
    zr = z.clone().requires_grad_()
    torchvision_sigmoid_focal_loss(zr, target.to(F64), -1 if alpha is None else alpha,
                                   gamma).sum().backward()
    torch.testing.assert_close(grad_of(LOSSES.build("focal", gamma=gamma, alpha=alpha,
                                                    reduction="sum"), z, target), zr.grad)


def test_binary_focal_alpha_list_is_negative_positive(focal_impl: str) -> None:
    z, y = binary_data()
    a = LOSSES.build("focal", alpha=[0.75, 0.25], reduction="none")(z, y)
    b = LOSSES.build("focal", alpha=0.25, reduction="none")(z, y)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, [0.1, 0.2, 0.3, 0.2, 0.2]])
def test_multiclass_focal(gamma: float, alpha: list[float] | None, focal_impl: str) -> None:
    z, y = multi_data()
    fn = LOSSES.build("focal", gamma=gamma, alpha=alpha, reduction="none")
    ref = softmax_focal(z, y, gamma, alpha)
    torch.testing.assert_close(fn(z, y), ref)
    zr = z.clone().requires_grad_()
    softmax_focal(zr, y, gamma, alpha).sum().backward()
    torch.testing.assert_close(
        grad_of(LOSSES.build("focal", gamma=gamma, alpha=alpha, reduction="sum"), z, y), zr.grad)
    # a scalar alpha multiplies every class (kornia's convention)
    scaled = LOSSES.build("focal", gamma=gamma, alpha=0.3, reduction="none")(z, y)
    torch.testing.assert_close(scaled, 0.3 * softmax_focal(z, y, gamma))


def test_focal_reduces_exactly_to_bce_and_ce() -> None:
    z, y = binary_data(seed=3)
    focal = LOSSES.build("focal", gamma=0.0, alpha=None, reduction="none")
    assert torch.equal(focal(z, y.to(F64)), LOSSES.build("bce", reduction="none")(z, y.to(F64)))
    assert torch.equal(focal(z, y), LOSSES.build("bce", reduction="none")(z, y))
    zm, ym = multi_data(seed=3)
    assert torch.equal(focal(zm, ym), LOSSES.build("ce", reduction="none")(zm, ym))
    assert torch.equal(focal(zm, ym), F.cross_entropy(zm, ym, reduction="none"))


@pytest.mark.parametrize("gamma", [0.5, 0.1, 2.0])
def test_focal_finite_gradients_at_saturated_logits(gamma: float, focal_impl: str) -> None:
    """(1 - p_t)^gamma has an infinite derivative at p_t = 1 for gamma < 1; ours stays finite."""
    z = torch.tensor([-100.0, -100.0, 100.0, 100.0, -30.0, 30.0, 0.0, 1e-3])
    y = torch.tensor([0, 1, 0, 1, 0, 1, 1, 0])
    zm = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 0.0], [0.0, 0.0, 0.0]])
    ym = torch.tensor([0, 0, 2])
    cases = [(z, y), (z, y.float()), (z, torch.tensor([0, 1, 0, 1, 0.2, 0.7, 1, 0])), (zm, ym)]
    for pred, target in cases:
        for alpha in (None, 0.25):
            fn = LOSSES.build("focal", gamma=gamma, alpha=alpha, reduction="sum")
            g = grad_of(fn, pred, target)
            assert torch.isfinite(fn(pred, target)) and torch.isfinite(g).all(), (pred, target)
            # the composite path (used under torch.func) is finite too
            gf = torch.func.grad(lambda p: fn(p, target))(pred)  # noqa: B023
            assert torch.isfinite(gf).all()
            torch.testing.assert_close(gf, g, atol=1e-6, rtol=1e-4)
    # naive (1 - p_t) ** gamma: NaN gradient for a confidently correct prediction
    zz = torch.tensor([100.0], requires_grad=True)
    torchvision_sigmoid_focal_loss(zz, torch.ones(1), gamma=0.5).sum().backward()
    assert torch.isnan(zz.grad).all()


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.0])
def test_focal_functions_gradcheck(gamma: float, focal_impl: str) -> None:
    z, y = binary_data(n=8, scale=2.0)
    zm, ym = multi_data(n=6, c=4)
    soft = torch.rand(8, generator=gen(4), dtype=F64)
    alpha = torch.tensor([0.3, 0.2, 0.4, 0.1], dtype=F64)
    funcs = [
        (lambda p: LF.focal_binary(p, y, gamma, 0.75, 0.25), z),
        (lambda p: LF.focal_binary(p, y.to(F64), gamma, None, None), z),
        (lambda p: LF.focal_binary(p, soft, gamma, 0.6, 0.4), z),
        (lambda p: LF.focal_multiclass(p, ym, gamma, alpha), zm),
        (lambda p: LF.focal_multiclass(p, ym, gamma, None), zm),
    ]
    for f, x in funcs:
        x = x.clone().requires_grad_()
        assert torch.autograd.gradcheck(f, (x,), fast_mode=True)
        assert torch.autograd.gradgradcheck(f, (x,), fast_mode=True)


def test_focal_fast_path_equals_composite(focal_impl: str) -> None:
    z, y = binary_data(scale=6.0)
    zm, ym = multi_data(scale=6.0)
    soft = torch.rand(len(z), generator=gen(6), dtype=F64)
    pairs = [
        (lambda p: LF.focal_binary(p, y, 0.7, 0.7, 0.3),
         lambda p: LF.focal_binary_composite(p, y, 0.7, 0.7, 0.3), z),
        (lambda p: LF.focal_binary(p, soft, 2.0, None, None),
         lambda p: LF.focal_binary_composite(p, soft, 2.0, None, None), z),
        (lambda p: LF.focal_multiclass(p, ym, 0.7, None),
         lambda p: LF.focal_multiclass_composite(p, ym, 0.7, None), zm),
    ]
    for fast, slow, x in pairs:
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        fa, fb = fast(a), slow(b)
        torch.testing.assert_close(fa, fb)
        fa.sum().backward()
        fb.sum().backward()
        torch.testing.assert_close(a.grad, b.grad)


def test_focal_target_gradient_uses_composite() -> None:
    z, _ = binary_data(n=6)
    soft = torch.rand(6, generator=gen(7), dtype=F64, requires_grad=True)
    fn = LOSSES.build("focal", gamma=2.0, alpha=None)
    fn(z, soft).backward()
    assert soft.grad is not None and torch.isfinite(soft.grad).all()


# ----------------------------------------------------------------------------- hinge


def test_binary_hinge() -> None:
    z, y = binary_data()
    pm = 2.0 * y.to(F64) - 1.0
    for squared in (False, True):
        fn = LOSSES.build("hinge", margin=0.8, squared=squared, reduction="none")
        ref = torch.clamp(0.8 - pm * z, min=0)
        ref = ref**2 if squared else ref
        torch.testing.assert_close(fn(z, y), ref)
        torch.testing.assert_close(fn(z, pm), ref)  # {-1, +1} labels: same loss
        torch.testing.assert_close(fn(z[:, None], y.to(F64)), ref)
    # gradient: -y where the margin is violated, 0 elsewhere
    g = grad_of(LOSSES.build("hinge", reduction="sum"), z, y)
    torch.testing.assert_close(g, torch.where(pm * z < 1, -pm, torch.zeros_like(pm)))


def test_multiclass_hinge_equals_multi_margin_loss() -> None:
    z, y = multi_data()
    for squared, p in ((False, 1), (True, 2)):
        for margin in (1.0, 0.3):
            fn = LOSSES.build("hinge", margin=margin, squared=squared, reduction="none")
            ref = F.multi_margin_loss(z, y, p=p, margin=margin, reduction="none")
            torch.testing.assert_close(fn(z, y), ref)
    # Weston-Watkins written out: sum_{c != y} max(0, m - z_y + z_c) / C
    zy = z[torch.arange(len(y)), y][:, None]
    ww = torch.clamp(1.0 - zy + z, min=0)
    ww[torch.arange(len(y)), y] = 0
    torch.testing.assert_close(LOSSES.build("hinge", reduction="none")(z, y), ww.sum(1) / 5)


# ----------------------------------------------------------------------------- kl


def test_kl_matches_kl_div_batchmean() -> None:
    z, _ = multi_data()
    q = torch.softmax(torch.randn(32, 5, generator=gen(8), dtype=F64) * 2, 1)
    q[0] = torch.tensor([1.0, 0, 0, 0, 0], dtype=F64)  # zeros in the target are fine
    fn = LOSSES.build("kl")
    torch.testing.assert_close(fn(z, q), F.kl_div(torch.log_softmax(z, 1), q,
                                                  reduction="batchmean"))
    per = LOSSES.build("kl", reduction="none")(z, q)
    torch.testing.assert_close(per, (q * (q.clamp_min(1e-300).log() - torch.log_softmax(z, 1)))
                               .sum(1))


def test_kl_temperature_convention() -> None:
    z, y = multi_data()
    teacher = torch.randn(32, 5, generator=gen(9), dtype=F64) * 3
    t = 4.0
    q = torch.softmax(teacher / t, 1)
    ref = F.kl_div(torch.log_softmax(z / t, 1), q, reduction="batchmean")
    torch.testing.assert_close(LOSSES.build("kl", temperature=t)(z, q), t**2 * ref)
    torch.testing.assert_close(LOSSES.build("kl", temperature=t, scale_t2=False)(z, q), ref)
    torch.testing.assert_close(
        LOSSES.build("kl", temperature=t, target_is_logits=True)(z, teacher), t**2 * ref)
    # gradient (p - q) / T * T^2 / n: magnitude kept as T grows
    g = grad_of(LOSSES.build("kl", temperature=t), z, q)
    torch.testing.assert_close(g, (torch.softmax(z / t, 1) - q) * t / len(z))
    # integer labels: KL to a one-hot target is the cross-entropy
    torch.testing.assert_close(LOSSES.build("kl", reduction="none")(z, y),
                               F.cross_entropy(z, y, reduction="none"))


@pytest.mark.parametrize("case", ["hard", "soft", "multiclass", "hard_gamma_half"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_focal_reduced_inside_the_function_equals_reducing_per_sample(case, reduction) -> None:
    """focal's mean/sum are reduced inside its autograd.Function (a scalar backward); value,
    gradient and float64 gradcheck must match the per-sample path reduced outside."""
    torch.manual_seed(0)
    gamma = 0.5 if case == "hard_gamma_half" else 2.0
    if case == "multiclass":
        z = torch.randn(64, 5, dtype=torch.float64) * 3
        y = torch.randint(0, 5, (64,))
        kwargs = {"gamma": gamma, "alpha": [0.1, 0.2, 0.3, 0.2, 0.2]}
    else:
        z = torch.randn(64, dtype=torch.float64) * 3
        y = torch.rand(64, dtype=torch.float64) if case == "soft" else torch.randint(0, 2, (64,))
        kwargs = {"gamma": gamma, "alpha": 0.25}
    reduced = LOSSES.build("focal", reduction=reduction, **kwargs)
    per_sample = LOSSES.build("focal", reduction="none", **kwargs)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    a = reduced(z1, y)
    b = per_sample(z2, y)
    b = b.mean() if reduction == "mean" else b.sum()
    assert a.dim() == 0 and torch.allclose(a, b, rtol=1e-12, atol=1e-14)
    a.backward()
    b.backward()
    assert torch.allclose(z1.grad, z2.grad, rtol=1e-10, atol=1e-14)
    assert torch.autograd.gradcheck(lambda t: reduced(t, y), (z.clone().requires_grad_(),))


def test_focal_float_hard_targets_take_the_hard_kernel_with_identical_results() -> None:
    torch.manual_seed(1)
    z = torch.randn(256, dtype=torch.float64) * 4
    y_long = torch.randint(0, 2, (256,))
    assert LF._hard_on_cpu(y_long.double())
    assert not LF._hard_on_cpu(y_long.double() * 0.9 + 0.05)  # smoothed: the soft kernel
    assert not LF._hard_on_cpu(torch.tensor([0.0, 1.0, 2.0, -1.0]))  # outside [0, 1]
    assert not LF._hard_on_cpu(torch.tensor([0.0, 1.0, 0.5]))  # soft after a hard first element
    assert not LF._hard_on_cpu(torch.tensor([1.0, float("nan")]))
    assert not LF._hard_on_cpu(torch.tensor([1.0 - 2.0**-24, 1.0]))

    fl = LOSSES.build("focal", gamma=2.0, alpha=0.25, reduction="none")
    za, zb = z.clone().requires_grad_(), z.clone().requires_grad_()
    a, b = fl(za, y_long), fl(zb, y_long.double())
    assert torch.allclose(a, b, rtol=1e-12, atol=0)
    a.sum().backward()
    b.sum().backward()
    assert torch.allclose(za.grad, zb.grad, rtol=1e-12, atol=0)


def test_focal_under_no_grad_matches_and_later_backward_is_unaffected() -> None:
    """The fused kernels form the gradient in the forward pass only when one is wanted."""
    torch.manual_seed(2)
    z = torch.randn(128, dtype=torch.float64, requires_grad=True)
    for y in (torch.rand(128, dtype=torch.float64), torch.randint(0, 2, (128,))):
        fl = LOSSES.build("focal", gamma=2.0, alpha=0.25, reduction="mean")
        with torch.no_grad():
            v0 = fl(z, y)
        assert v0.grad_fn is None
        v1 = fl(z, y)
        assert torch.equal(v0, v1.detach())
        (g,) = torch.autograd.grad(v1, z)
        ref = LF.focal_binary_composite(z, y, 2.0, 0.75, 0.25).mean()
        (g_ref,) = torch.autograd.grad(ref, z)
        assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-14)
