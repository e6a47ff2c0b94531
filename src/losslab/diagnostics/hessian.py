"""Forward and reverse mode: JVP, VJP and Hessian-vector products (torch.func), and the
Hessian's top eigenvalue (Lanczos or power iteration) and trace (Hutchinson) from HVPs alone.

    jvp:  J v       one forward pass carrying a tangent (forward mode)
    vjp:  u^T J     one backward pass from a cotangent (reverse mode)
    hvp:  H v = d/de grad L(theta + e v) |_{e=0}     forward-over-reverse: jvp of grad,
          about 2-3 gradient evaluations and never the n x n matrix
    Lanczos (k steps, full reorthogonalisation): an orthonormal basis Q_k of the Krylov space
          span{q, Hq, ..., H^{k-1} q} with Q_k^T H Q_k = T_k tridiagonal; the largest eigenvalue of
          T_k approaches lambda_max(H) from below, exact once k = n.
    power iteration: v <- Hv / ||Hv||, lambda = v^T H v; converges to the eigenvalue of largest
          |lambda| (which is lambda_max only when H has no larger negative eigenvalue).
    Hutchinson: tr(H) = E[z^T H z] for Rademacher z (E[z z^T] = I); the mean of m probes has
          standard error std(z^T H z) / sqrt(m).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad
from torch.func import jvp as _jvp
from torch.func import vjp as _vjp

from losslab.errors import check_choice

MatVec = Callable[[Tensor], Tensor]


def jvp(f: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """(f(primals), J_f(primals) tangents) in one forward-mode pass."""
    return _jvp(f, tuple(primals), tuple(tangents))


def vjp(f: Callable[..., Any], primals: Sequence[Any], cotangent: Any) -> tuple[Any, tuple]:
    """(f(primals), cotangent^T J_f(primals)): one gradient per primal, reverse mode."""
    out, pullback = _vjp(f, *primals)
    return out, pullback(cotangent)


def hvp(f: Callable[..., Tensor], primals: Sequence[Any], tangents: Sequence[Any]) -> Any:
    """H v for a scalar f of all primals: the JVP of grad f (forward-over-reverse); where an op
    has no forward-mode rule for its backward (torch 2.13: fused mse_loss 'mean'), the VJP of
    grad f instead (reverse-over-reverse; H is symmetric, so v^T H = (H v)^T)."""
    argnums = tuple(range(len(primals)))
    g = grad(f, argnums=argnums)
    try:
        return _jvp(g, tuple(primals), tuple(tangents))[1]
    except RuntimeError:
        return _vjp(g, *primals)[1](tuple(tangents))


class FlatLoss:
    """theta -> mean loss of `model` on (x, y), theta being all trainable parameters as one
    vector (in `named_parameters` order), so curvature tools can work on plain vectors."""

    def __init__(self, model: nn.Module, loss: Callable[[Tensor, Tensor], Tensor], x: Tensor,
                 y: Tensor) -> None:
        self.model, self.loss, self.x, self.y = model, loss, x, y
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        self.names = [k for k, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.theta = torch.cat([p.detach().reshape(-1) for _, p in named])
        self.buffers = dict(model.named_buffers())

    @property
    def numel(self) -> int:
        return self.theta.numel()

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        parts = torch.split(theta, self.sizes)
        return {k: t.view(s) for k, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def __call__(self, theta: Tensor) -> Tensor:
        params = {**self.buffers, **self.unflatten(theta)}
        out = self.loss(functional_call(self.model, params, (self.x,)), self.y)
        return out.mean() if out.dim() else out

    def hvp(self, v: Tensor) -> Tensor:
        """H v at the current parameters: d(grad . v)/d theta by double backward.

        Measured on the default MLP (145k parameters, batch 100, one CPU core): 10 ms, against
        16 ms for torch.func forward-over-reverse and 14 ms for its reverse-over-reverse, and it
        works with every loss whose backward is differentiable (custom Functions included).
        """
        theta = self.theta.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self(theta), theta, create_graph=True)
            if not g.requires_grad:  # piecewise-linear in theta (e.g. mae on a linear model)
                return torch.zeros_like(v)
            (hv,) = torch.autograd.grad(g, theta, v, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv


def lanczos(matvec: MatVec, n: int, steps: int, like: Tensor,
            generator: torch.Generator | None = None) -> Tensor:
    """Eigenvalues (ascending) of the k x k tridiagonal T_k of `steps` Lanczos iterations."""
    k = max(1, min(int(steps), n))
    q = torch.randn(n, generator=generator, dtype=like.dtype).to(like.device)
    q = q / q.norm()
    basis, alphas, betas = [q], [], []
    for j in range(k):
        w = matvec(basis[j])
        alpha = torch.dot(w, basis[j])
        alphas.append(alpha)
        w = w - alpha * basis[j] - (betas[-1] * basis[j - 1] if j > 0 else 0.0)
        stacked = torch.stack(basis)
        for _ in range(2):  # full reorthogonalisation (twice is enough) keeps T_k honest
            w = w - stacked.T @ (stacked @ w)
        beta = w.norm()
        if j == k - 1 or beta <= 1e-10 * max(1.0, float(alpha.abs())):
            break
        betas.append(beta)
        basis.append(w / beta)
    m = len(alphas)
    t = torch.diag(torch.stack(alphas))
    if m > 1:
        off = torch.stack(betas[: m - 1])
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(t)


def power_iteration(matvec: MatVec, n: int, steps: int, like: Tensor, tol: float = 1e-4,
                    generator: torch.Generator | None = None) -> float:
    """The eigenvalue of largest |lambda| by v <- Hv / ||Hv|| (Rayleigh quotient v^T H v)."""
    v = torch.randn(n, generator=generator, dtype=like.dtype).to(like.device)
    v = v / v.norm()
    value = 0.0
    for _ in range(max(1, int(steps))):
        hv = matvec(v)
        new = float(torch.dot(v, hv))
        norm = hv.norm()
        if norm == 0:
            return 0.0
        v = hv / norm
        if abs(new - value) <= tol * max(abs(new), 1e-12):
            return new
        value = new
    return value


def hessian_top_eigenvalue(matvec: MatVec, n: int, like: Tensor, iterations: int = 20,
                           method: str = "lanczos", seed: int = 0) -> float:
    """lambda_max(H) from `iterations` Hessian-vector products (Lanczos or power iteration)."""
    check_choice("hessian_top_eigenvalue", "method", method, ("lanczos", "power"))
    g = torch.Generator().manual_seed(seed)
    if method == "power":
        return power_iteration(matvec, n, iterations, like, generator=g)
    return float(lanczos(matvec, n, iterations, like, generator=g)[-1])


def hessian_trace(matvec: MatVec, n: int, like: Tensor, probes: int = 10,
                  seed: int = 0) -> tuple[float, float]:
    """Hutchinson's estimate of tr(H) = E[z^T H z], z Rademacher: (mean, standard error)."""
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(max(1, int(probes))):
        z = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).to(like)
        values.append(float(torch.dot(z, matvec(z))))
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def sharpness(model: nn.Module, loss: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
              iterations: int = 20, probes: int = 10, method: str = "lanczos",
              seed: int = 0) -> dict[str, float]:
    """Top Hessian eigenvalue and Hutchinson trace of the mean loss on (x, y), in eval mode
    (dropout off: a deterministic function). Restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        f = FlatLoss(model, loss, x, y)
        top = hessian_top_eigenvalue(f.hvp, f.numel, f.theta, iterations, method, seed)
        trace, err = hessian_trace(f.hvp, f.numel, f.theta, probes, seed + 1) if probes > 0 \
            else (math.nan, math.nan)
    finally:
        model.train(was_training)
    return {"top_eigenvalue": top, "hessian_trace": trace, "hessian_trace_stderr": err}
