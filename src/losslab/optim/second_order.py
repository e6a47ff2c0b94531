"""Second-order optimizers: Hessian-free Newton-CG and natural gradient (Gauss-Newton / Fisher).

Both solve the damped Newton system with conjugate gradients, touching the curvature matrix
only through matrix-vector products, then take the step with an Armijo line search and adapt
the damping with the Levenberg-Marquardt rule (Martens 2010, "Deep learning via Hessian-free
optimization"):

    (C + (lambda + wd) I) d = -(g + wd * theta)         C = Hessian (newton_cg) or GGN/Fisher
    s = lr_group * d ;  theta <- theta + alpha s        alpha in {1, 1/2, 1/4, ...} (Armijo)
    rho = (L(theta + alpha s) - L(theta)) / q(alpha s)  q(s) = g's + s'(C + wd I)s / 2
    lambda <- lambda * 3/2 if rho < 1/4;  lambda <- lambda * 2/3 if rho > 3/4

Closures. `step(closure)` is required. What the closure returns decides what can be computed:

* **Standard closure** (the torch/Lightning contract: zero grads, forward, `loss.backward()`,
  return the loss). `NewtonCG` then forms Hessian-vector products by finite differences of
  gradients, ``Hv ~ (g(theta + eps v) - g(theta)) / eps``, one closure call per CG iteration.
  This is what Lightning's automatic optimization passes, so `optim=newton_cg` works in a normal
  training run (like LBFGS). The closure must be deterministic: no dropout, and BatchNorm running
  statistics get updated at every call.
* **Graph closure** (no `backward()`; return the loss with its autograd graph alive).
  `NewtonCG` uses exact double-backward Hessian-vector products. `NaturalGradient` needs this
  form, because the Fisher is not a function of the scalar loss alone. It accepts:
    - ``(loss, outputs)``: the generalised Gauss-Newton ``G = J' H_l J`` with ``J = d out/d theta``
      and ``H_l = d^2 loss / d out^2``; products ``Gv`` by the double-backward trick (three
      backward passes, no forward). For MSE and softmax cross-entropy G equals the Fisher, so
      this is the natural gradient (Martens 2014, "New insights and perspectives on the natural
      gradient method").
    - per-sample losses of shape ``[N]``: the empirical Fisher ``F = (1/N) sum_i g_i g_i'``,
      ``Fv = J'(Jv)/N`` with J the per-sample-loss Jacobian (the optimized loss is their mean).
  In Lightning this means manual optimization (see `NaturalGradient`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from losslab.errors import UserError, check_choice

Closure = Callable[[], Any]


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _unflat(vec: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, i = [], 0
    for t in like:
        n = t.numel()
        out.append(vec[i:i + n].view_as(t))
        i += n
    return out


def _grads(outputs: Tensor | Sequence[Tensor], inputs: Sequence[Tensor], grad_outputs: Any = None,
           create_graph: bool = False) -> list[Tensor]:
    """autograd.grad with zeros for unused inputs; the graph is always retained."""
    if isinstance(outputs, Tensor):
        outputs, grad_outputs = [outputs], None if grad_outputs is None else [grad_outputs]
    pairs = [(o, None if grad_outputs is None else grad_outputs[i])
             for i, o in enumerate(outputs) if o.requires_grad]
    if not pairs:
        return [torch.zeros_like(x) for x in inputs]
    outs = [o for o, _ in pairs]
    gos = None if grad_outputs is None else [go for _, go in pairs]
    return list(torch.autograd.grad(outs, list(inputs), grad_outputs=gos, retain_graph=True,
                                    create_graph=create_graph, allow_unused=True,
                                    materialize_grads=True))


def _split(out: Any) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Closure output -> (scalar loss, model outputs or None, per-sample losses or None)."""
    outputs = per_sample = None
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise UserError("optimizer closure: return a loss, or a (loss, outputs) pair.")
        out, outputs = out
    if isinstance(out, dict):
        out = out["loss"]
    if not isinstance(out, Tensor):
        raise UserError(f"optimizer closure must return a loss tensor, got {type(out).__name__}.")
    if out.ndim == 1:
        per_sample, out = out, out.mean()
    elif out.ndim != 0:
        raise UserError(
            "optimizer closure: the loss must be a scalar or per-sample [N], "
            f"got shape {tuple(out.shape)}."
        )
    return out, outputs, per_sample


class _DampedCG(Optimizer):
    """Shared machinery: damped CG solve, per-group lr, Armijo search, Levenberg-Marquardt."""

    def __init__(self, params: Any, lr: float, weight_decay: float, damping: float,
                 max_cg_iters: int, cg_tol: float, adapt_damping: bool, line_search: bool,
                 max_backtracks: int) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        self.max_cg_iters = int(max_cg_iters)
        self.cg_tol = float(cg_tol)
        self.adapt_damping = bool(adapt_damping)
        self.line_search = bool(line_search)
        self.max_backtracks = int(max_backtracks)
        self.damping_boost = 1.5
        self.min_damping, self.max_damping = 1e-10, 1e10
        self._params = [p for g in self.param_groups for p in g["params"]]
        self.closure_calls = 0
        self.state[self._params[0]].setdefault("damping", float(damping))
        self.last: dict[str, Any] = {}  # diagnostics of the last step (cg iters, rho, ...)

    # -- hooks for subclasses ---------------------------------------------------------------
    def _call(self, closure: Closure, grad: bool = True) -> Any:
        """One closure evaluation with fresh .grad (counted), with or without autograd."""
        self.closure_calls += 1
        for p in self._params:
            p.grad = None
        with torch.enable_grad() if grad else torch.no_grad():
            return closure()

    def _prepare(self, closure: Closure) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor],
                                                   Callable[[], Tensor]]:
        """Return (loss, flat grad, curvature mvp, loss evaluator at the current params)."""
        raise NotImplementedError

    # -- helpers ---------------------------------------------------------------------------
    def _per_param(self, key: str) -> Tensor:
        return _flat([torch.full_like(p, float(g[key])) for g in self.param_groups
                      for p in g["params"]])

    def _l2(self, wd: Tensor) -> Tensor:
        theta = _flat([p.detach() for p in self._params])
        return 0.5 * (wd * theta * theta).sum()

    def _set(self, vec: Tensor) -> None:
        with torch.no_grad():
            for p, v in zip(self._params, _unflat(vec, self._params), strict=True):
                p.copy_(v)

    @staticmethod
    def _cg(mvp: Callable[[Tensor], Tensor], b: Tensor, max_iters: int,
            tol: float) -> tuple[Tensor, int, float]:
        """Truncated CG for A x = b from x = 0; stops at negative curvature.

        Returns (x, iterations, curvature) where curvature is p'Ap / p'p <= 0 of the direction
        that stopped CG, or nan when none did."""
        x = torch.zeros_like(b)
        r, p = b.clone(), b.clone()
        rr, b_norm = r @ r, b.norm()
        it, negative = 0, math.nan
        for it in range(1, max_iters + 1):  # noqa: B007
            if rr.sqrt() <= tol * b_norm:
                it -= 1
                break
            ap = mvp(p)
            pap = p @ ap
            if pap <= 0:
                negative = float(pap / (p @ p))
                if it == 1:
                    x = b.clone()  # no usable curvature: steepest descent
                break
            alpha = rr / pap
            x = x + alpha * p
            r = r - alpha * ap
            rr_new = r @ r
            p = r + (rr_new / rr) * p
            rr = rr_new
        return x, it, negative

    # -- the step ----------------------------------------------------------------------------
    def step(self, closure: Closure | None = None) -> Tensor:  # type: ignore[override]
        if closure is None:
            raise UserError(
                f"optimizer '{type(self).__name__}' needs a closure: optimizer.step(closure)."
            )
        state = self.state[self._params[0]]
        lam = float(state["damping"])
        loss0, g, mvp, eval_loss = self._prepare(closure)
        theta0 = _flat([p.detach() for p in self._params]).clone()
        wd, lr = self._per_param("weight_decay"), self._per_param("lr")
        f0 = float(loss0) + float(self._l2(wd))
        g = g + wd * theta0

        def curvature(v: Tensor) -> Tensor:
            return mvp(v) + wd * v

        d, iters, negative = self._cg(lambda v: curvature(v) + lam * v, -g, self.max_cg_iters,
                                      self.cg_tol)
        s = lr * d
        gs = float(g @ s)
        if not gs < 0:  # not a descent direction (noise or negative curvature): use -g
            s = -lr * g
            gs = float(g @ s)
        shs = float(s @ curvature(s))

        alpha, accepted, f_new = 1.0, False, math.nan
        evaluate = self.line_search or self.adapt_damping
        for _ in range(self.max_backtracks + 1 if self.line_search else 1):
            self._set(theta0 + alpha * s)
            if not evaluate:
                accepted = True
                break
            f_new = float(eval_loss()) + float(self._l2(wd))
            if not self.line_search or f_new <= f0 + 1e-4 * alpha * gs:
                accepted = True
                break
            alpha *= 0.5
        if not accepted:
            self._set(theta0)

        if self.adapt_damping:
            q = alpha * gs + 0.5 * alpha * alpha * shs
            rho = (f_new - f0) / q if (accepted and q < 0) else -math.inf
            if rho < 0.25:
                lam *= self.damping_boost ** (1 if accepted else 2)
            elif rho > 0.75:
                lam /= self.damping_boost
            state["damping"] = min(max(lam, self.min_damping), self.max_damping)
        else:
            rho = math.nan
        # leave .grad = gradient of the returned loss (the closure calls above changed it)
        for p, gp in zip(self._params, _unflat(g - wd * theta0, self._params), strict=True):
            p.grad = gp.detach().clone()
        self.last = dict(cg_iters=iters, negative_curvature=negative <= 0, alpha=alpha,
                         accepted=accepted, rho=rho, damping=state["damping"], loss=f0,
                         new_loss=f_new)
        return loss0.detach()


class NewtonCG(_DampedCG):
    """Hessian-free truncated Newton (Newton-CG) with damping and line search.

    Solves ``(H + lambda I) d = -g`` by CG on Hessian-vector products; see the module docstring
    for the update, the damping rule and the two closure forms. ``hvp``: ``"auto"`` picks exact
    double-backward products when the closure returns a live graph without calling backward,
    and finite differences of gradients when it called backward (the standard closure, e.g.
    Lightning's); ``"fd"`` insists on finite differences (a graph closure is then an error).

    Args:
        lr: scales the Newton step (1.0 = full step); per-group lrs scale their block.
        damping: initial Levenberg-Marquardt damping lambda (adapted when `adapt_damping`).
        max_cg_iters / cg_tol: CG stops after this many products or at
            ``|r| <= cg_tol |g|``; it also stops at negative curvature.
        weight_decay: L2 penalty ``wd |theta|^2 / 2`` (gradient and curvature), per group.
        fd_eps: finite-difference step scale; the step is
            ``fd_eps * (1 + |theta|) / |v|``, default ``2 sqrt(machine eps)``.
    """

    def __init__(self, params: Any, lr: float = 1.0, damping: float = 1e-2,
                 max_cg_iters: int = 50, cg_tol: float = 1e-4, weight_decay: float = 0.0,
                 adapt_damping: bool = True, line_search: bool = True, max_backtracks: int = 8,
                 hvp: str = "auto", fd_eps: float | None = None) -> None:
        check_choice("optimizer 'newton_cg'", "hvp", hvp, ("auto", "fd"))
        super().__init__(params, lr, weight_decay, damping, max_cg_iters, cg_tol, adapt_damping,
                         line_search, max_backtracks)
        self.hvp, self.fd_eps = hvp, fd_eps

    def _prepare(self, closure: Closure):  # type: ignore[no-untyped-def]
        params = self._params
        loss, _, _ = _split(self._call(closure))
        called_backward = any(p.grad is not None for p in params)
        if not called_backward and not loss.requires_grad:
            raise UserError("optimizer 'newton_cg': the closure's loss has no graph and the "
                            "closure did not call backward.")
        if called_backward:
            g0 = _flat([torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                        for p in params])

            def grad_eval() -> tuple[Tensor, Tensor]:
                loss, _, _ = _split(self._call(closure))
                return loss.detach(), _flat([torch.zeros_like(p) if p.grad is None
                                             else p.grad.detach() for p in params])

            theta0 = _flat([p.detach() for p in params]).clone()
            unit = self.fd_eps or 2.0 * math.sqrt(torch.finfo(theta0.dtype).eps)
            scale = unit * (1.0 + float(theta0.norm()))

            def hvp(v: Tensor) -> Tensor:
                v_norm = float(v.norm())
                if v_norm == 0:
                    return torch.zeros_like(v)
                eps = scale / v_norm
                self._set(theta0 + eps * v)
                _, g1 = grad_eval()
                self._set(theta0)
                return (g1 - g0) / eps

            return loss.detach(), g0, hvp, lambda: grad_eval()[0]

        if self.hvp == "fd":
            raise UserError("optimizer 'newton_cg': hvp='fd' needs a closure that calls "
                            "backward().")
        grads = _grads(loss, params, create_graph=True)
        g0 = _flat([gr.detach() for gr in grads])

        def hvp_exact(v: Tensor) -> Tensor:
            return _flat([h.detach() for h in _grads(grads, params, _unflat(v, params))])

        def eval_loss() -> Tensor:
            return _split(self._call(closure, grad=False))[0]

        return loss.detach(), g0, hvp_exact, eval_loss


class NaturalGradient(_DampedCG):
    """Natural gradient with Gauss-Newton / Fisher-vector products and CG.

    Solves ``(G + lambda I) d = -g``; G is the generalised Gauss-Newton matrix when the
    closure returns ``(loss, outputs)`` and the empirical Fisher when it returns per-sample
    losses ``[N]`` (see the module docstring). The closure must NOT call backward: the
    optimizer differentiates the returned graph itself. Lightning's automatic-optimization
    closure returns a detached scalar, so it cannot work; use manual optimization::

        def training_step(self, batch, _):
            x, y = batch
            opt = self.optimizers()
            def closure():
                out = self.model(x)
                return self.loss(out, y), out
            loss = opt.step(closure)

    `needs_graph_closure` is True so a LightningModule can switch to manual optimization.

    Args: as `NewtonCG` (lr, damping, max_cg_iters, cg_tol, weight_decay, adapt_damping,
    line_search, max_backtracks); ``fisher`` = ``"auto"`` (from the closure's return form),
    ``"ggn"`` or ``"empirical"`` to insist on one.
    """

    needs_graph_closure = True

    def __init__(self, params: Any, lr: float = 1.0, damping: float = 1e-3,
                 max_cg_iters: int = 50, cg_tol: float = 1e-4, weight_decay: float = 0.0,
                 adapt_damping: bool = True, line_search: bool = True, max_backtracks: int = 8,
                 fisher: str = "auto") -> None:
        check_choice("optimizer 'natural_gradient'", "fisher", fisher,
                     ("auto", "ggn", "empirical"))
        super().__init__(params, lr, weight_decay, damping, max_cg_iters, cg_tol, adapt_damping,
                         line_search, max_backtracks)
        self.fisher = fisher

    def _prepare(self, closure: Closure):  # type: ignore[no-untyped-def]
        params = self._params
        loss, outputs, per_sample = _split(self._call(closure))
        if any(p.grad is not None for p in params) or not loss.requires_grad:
            raise UserError(
                "optimizer 'natural_gradient' needs a closure that returns (loss, outputs) or "
                "per-sample losses with their graph, without calling backward() (in Lightning: "
                "manual optimization; see losslab.optim.second_order.NaturalGradient)."
            )
        kind = "ggn" if outputs is not None else "empirical" if per_sample is not None else None
        if kind is None or (self.fisher != "auto" and self.fisher != kind):
            want = {"ggn": "(loss, outputs)", "empirical": "per-sample losses [N]"}
            raise UserError(
                f"optimizer 'natural_gradient' (fisher={self.fisher!r}): the closure must return "
                + (want[self.fisher] if self.fisher != "auto" else " or ".join(want.values()))
                + "."
            )
        g0 = _flat([gr.detach() for gr in _grads(loss, params)])
        # Jacobian-vector products by the double-backward trick: J'u is linear in u, so
        # d(v . J'u)/du = Jv.
        target = outputs if kind == "ggn" else per_sample
        assert target is not None
        u = torch.zeros_like(target, requires_grad=True)
        jtu = _grads(target, params, u, create_graph=True)

        def jvp(v: Tensor) -> Tensor:
            return _grads(jtu, [u], _unflat(v, params))[0].detach()

        def jtvp(z: Tensor) -> Tensor:
            return _flat([t.detach() for t in _grads(target, params, z)])

        if kind == "ggn":
            dl_dout = torch.autograd.grad(loss, outputs, retain_graph=True, create_graph=True,
                                          allow_unused=True)[0]
            if dl_dout is None:
                raise UserError("optimizer 'natural_gradient': the loss returned by the closure "
                                "does not depend on the outputs it returned (return the same "
                                "tensor the loss was computed from).")

            def mvp(v: Tensor) -> Tensor:
                hjv = _grads(dl_dout, [outputs], jvp(v))[0].detach()
                return jtvp(hjv)
        else:
            n = per_sample.numel()  # type: ignore[union-attr]

            def mvp(v: Tensor) -> Tensor:
                return jtvp(jvp(v)) / n

        self.last_curvature = kind

        def eval_loss() -> Tensor:
            return _split(self._call(closure, grad=False))[0]

        return loss.detach(), g0, mvp, eval_loss
