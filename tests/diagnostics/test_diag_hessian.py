"""JVP / VJP / HVP against explicit Jacobians and Hessians; eigenvalue and trace estimates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from losslab.diagnostics.hessian import (
    FlatLoss,
    hessian_top_eigenvalue,
    hessian_trace,
    hvp,
    jvp,
    sharpness,
    vjp,
)
from losslab.losses import LOSSES


def tiny(activation: type[nn.Module] = nn.Tanh, seed: int = 0) -> tuple[nn.Module, ...]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), activation(), nn.Linear(4, 3)).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    return model, x, y


def explicit_hessian(f: FlatLoss) -> torch.Tensor:
    return torch.autograd.functional.hessian(f, f.theta)


def test_jvp_and_vjp_match_the_jacobian() -> None:
    a = torch.randn(4, 3, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(a @ x) * x.sum()

    x, v, u = (torch.randn(n, dtype=torch.float64) for n in (3, 3, 4))
    jac = torch.autograd.functional.jacobian(f, x)
    out, jv = jvp(f, (x,), (v,))
    assert torch.allclose(out, f(x)) and torch.allclose(jv, jac @ v, atol=1e-12)
    _, (uj,) = vjp(f, (x,), u)
    assert torch.allclose(uj, u @ jac, atol=1e-12)


@pytest.mark.parametrize("loss_name", ["ce", "focal"])
def test_hvp_matches_the_explicit_hessian(loss_name: str) -> None:
    model, x, y = tiny()
    f = FlatLoss(model, LOSSES.build(loss_name, reduction="none"), x, y)
    h = explicit_hessian(f)
    assert h.shape == (f.numel, f.numel) and torch.allclose(h, h.T, atol=1e-10)
    for seed in range(3):
        v = torch.randn(f.numel, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        assert torch.allclose(f.hvp(v), h @ v, atol=1e-10, rtol=1e-8)


def test_generic_hvp_on_several_primals() -> None:
    a, b = torch.randn(3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    va, vb = torch.randn(3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)

    def f(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (p.sin() * p).sum() * q.exp().sum()

    ha, hb = hvp(f, (a, b), (va, vb))
    full = torch.autograd.functional.hessian(lambda z: f(z[:3], z[3:]), torch.cat([a, b]))
    expected = full @ torch.cat([va, vb])
    assert torch.allclose(torch.cat([ha, hb]), expected, atol=1e-12)


def test_hvp_falls_back_where_forward_mode_has_no_rule() -> None:
    x, y = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    w, v = torch.randn(2, dtype=torch.float64), torch.randn(2, dtype=torch.float64)

    def f(w: torch.Tensor) -> torch.Tensor:  # fused mse_loss 'mean': no jvp-of-grad rule
        return torch.nn.functional.mse_loss(torch.tanh(x @ w), y)

    (hv,) = hvp(f, (w,), (v,))
    assert torch.allclose(hv, torch.autograd.functional.hessian(f, w) @ v, atol=1e-12)


def test_hvp_of_a_piecewise_linear_loss_is_zero() -> None:
    model = nn.Linear(3, 1).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    f = FlatLoss(model, LOSSES.build("mae"), x, y)
    assert torch.equal(f.hvp(torch.ones(f.numel, dtype=torch.float64)), torch.zeros(f.numel,
                                                                                    dtype=torch.float64))


def test_top_eigenvalue_matches_eigvalsh() -> None:
    model, x, y = tiny(nn.GELU)
    f = FlatLoss(model, LOSSES.build("ce", reduction="none"), x, y)
    exact = torch.linalg.eigvalsh(explicit_hessian(f))
    # Lanczos with k = n steps is exact; with fewer it approaches lambda_max from below
    top = hessian_top_eigenvalue(f.hvp, f.numel, f.theta, iterations=f.numel)
    assert top == pytest.approx(float(exact[-1]), rel=1e-8)
    top20 = hessian_top_eigenvalue(f.hvp, f.numel, f.theta, iterations=20)
    assert top20 == pytest.approx(float(exact[-1]), rel=1e-3)


def test_power_iteration_on_a_positive_semidefinite_hessian() -> None:
    torch.manual_seed(1)
    model = nn.Linear(5, 1).double()  # MSE on a linear model: H = 2 [X 1]^T [X 1] / N >= 0
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randn(20, dtype=torch.float64)
    f = FlatLoss(model, LOSSES.build("mse"), x, y)
    exact = torch.linalg.eigvalsh(explicit_hessian(f))
    power = hessian_top_eigenvalue(f.hvp, f.numel, f.theta, iterations=500, method="power")
    assert power == pytest.approx(float(exact[-1]), rel=1e-3)


def test_hutchinson_trace_is_close_to_the_exact_trace() -> None:
    model, x, y = tiny()
    f = FlatLoss(model, LOSSES.build("ce", reduction="none"), x, y)
    h = explicit_hessian(f)
    exact = float(torch.trace(h))
    few, _ = hessian_trace(f.hvp, f.numel, f.theta, probes=3, seed=0)  # the HVP path ...
    same, _ = hessian_trace(lambda v: h @ v, f.numel, f.theta, probes=3, seed=0)
    assert few == pytest.approx(same, rel=1e-9)  # ... equals the explicit matrix's
    estimate, stderr = hessian_trace(lambda v: h @ v, f.numel, f.theta, probes=4000, seed=0)
    assert abs(estimate - exact) < 4 * stderr
    assert estimate == pytest.approx(exact, rel=0.05)


def test_sharpness_restores_the_mode_and_ignores_dropout() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 3, (10,))
    loss = LOSSES.build("ce", reduction="none")
    first = sharpness(model, loss, x, y, iterations=10, probes=4)
    assert model.training
    assert sharpness(model, loss, x, y, iterations=10, probes=4) == first  # deterministic
    assert first["top_eigenvalue"] > 0 and first["hessian_trace"] > 0
