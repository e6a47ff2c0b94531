"""Multi-task loss weighting: total = sum_i w_i L_i (+ strategy-specific terms).

Strategies (registry `WEIGHTINGS`, config `multitask.weighting=<name>`):

* ``equal``        w_i = 1.
* ``fixed``        w_i given (a list in task order, or a {task: weight} mapping).
* ``uncertainty``  Kendall, Gal & Cipolla (2018), learned s_i = log sigma_i^2:
                   regression term      1/2 e^{-s_i} L_i + 1/2 s_i
                   classification term      e^{-s_i} L_i + 1/2 s_i
                   For a Gaussian likelihood with L_i the mean squared error,
                   d/ds (1/2 e^{-s} L + 1/2 s) = -1/2 e^{-s} L + 1/2 = 0  =>  e^{s} = sigma^2 = L,
                   i.e. sigma^2 = L and sigma = sqrt(L) (NOT e^{s} = sqrt(L), as some course
                   notes write). Once the model fits f, sigma_i estimates the noise std.
* ``dwa``          Dynamic Weight Average (Liu, Johns & Davison 2019), per epoch t:
                   r_i = L_i(t-1) / L_i(t-2), w_i = K exp(r_i / T) / sum_j exp(r_j / T);
                   w_i = 1 for the first two epochs.
* ``gradnorm``     GradNorm (Chen et al. 2018): learnable w_i, G_i = ||grad_W w_i L_i|| on the
                   last shared layer W, r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0)),
                   L_grad = sum_i |G_i - mean(G) r_i^alpha| (target treated as a constant) updates
                   w only; after each optimizer step w <- K w / sum_j w_j.

Learned parameters (`log_vars`, `weights`) are 1-dimensional module parameters, so they are
checkpointed with the model and the parameter-group rule gives them no weight decay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from losslab.errors import UserError, check_range
from losslab.registry import Registry

WEIGHTINGS: Registry[Weighting] = Registry("multi-task weighting")


class Weighting(nn.Module):
    """Base: `combine(losses [K]) -> (total, effective weights [K])`; weights are detached."""

    needs_shared_grads = False

    def __init__(self, tasks: Sequence[str], kinds: Sequence[str]) -> None:
        super().__init__()
        self.tasks, self.kinds = list(tasks), list(kinds)
        self.num_tasks = len(self.tasks)

    def combine(self, losses: Tensor, shared: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def extra_logs(self) -> dict[str, Tensor]:
        """Per-task values to log besides the weights (e.g. sigma), keyed `<what>/<task>`."""
        return {}

    def end_epoch(self, epoch_losses: Tensor) -> None:
        """Called with each task's mean training loss of the finished epoch (DWA)."""

    def after_step(self) -> None:
        """Called after each optimizer step (GradNorm renormalisation)."""


@WEIGHTINGS.register("equal")
class EqualWeighting(Weighting):
    """total = sum_i L_i."""

    def combine(self, losses: Tensor, shared: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return losses.sum(), torch.ones_like(losses).detach()


@WEIGHTINGS.register("fixed")
class FixedWeighting(Weighting):
    """total = sum_i w_i L_i with configured w (list in task order or {task: weight})."""

    def __init__(self, tasks: Sequence[str], kinds: Sequence[str],
                 weights: Sequence[float] | Mapping[str, float] | None = None) -> None:
        super().__init__(tasks, kinds)
        names = ", ".join(self.tasks)
        if weights is None:
            raise UserError(f"multitask weighting 'fixed' needs 'weights': one per task "
                            f"({names}).")
        if isinstance(weights, Mapping):
            missing = [t for t in self.tasks if t not in weights]
            extra = [k for k in weights if k not in self.tasks]
            if missing or extra:
                raise UserError(f"multitask weighting 'fixed': weights name tasks "
                                f"{sorted(weights)}, the data's tasks are {names} "
                                f"(missing: {missing or '-'}, unknown: {extra or '-'}).")
            weights = [weights[t] for t in self.tasks]
        weights = list(weights)
        if len(weights) != self.num_tasks:
            raise UserError(f"multitask weighting 'fixed': got {len(weights)} weights "
                            f"{weights}, but there are {self.num_tasks} tasks ({names}).")
        for t, w in zip(self.tasks, weights, strict=True):
            check_range("multitask weighting 'fixed'", f"weights[{t}]", w, low=0)
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]))

    def combine(self, losses: Tensor, shared: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w = self.weights.to(losses.dtype)
        return (w * losses).sum(), w


def kendall_factor(kinds: Sequence[str]) -> Tensor:
    """1/2 for regression (Gaussian likelihood), 1 for classification (scaled softmax)."""
    return torch.tensor([0.5 if k == "regression" else 1.0 for k in kinds])


@WEIGHTINGS.register("uncertainty", aliases=("kendall",))
class UncertaintyWeighting(Weighting):
    """Kendall et al. 2018: total = sum_i c_i e^{-s_i} L_i + 1/2 s_i, s_i = log sigma_i^2,
    c_i = 1/2 (regression) or 1 (classification). Optimum (regression, MSE): e^{s_i} = L_i."""

    def __init__(self, tasks: Sequence[str], kinds: Sequence[str],
                 init_log_var: float = 0.0) -> None:
        super().__init__(tasks, kinds)
        self.log_vars = nn.Parameter(torch.full((self.num_tasks,), float(init_log_var)))
        self.register_buffer("factor", kendall_factor(self.kinds), persistent=False)

    def combine(self, losses: Tensor, shared: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w = self.factor.to(losses.dtype) * torch.exp(-self.log_vars)
        total = (w * losses + 0.5 * self.log_vars).sum()
        return total, w.detach()

    def sigma(self) -> Tensor:
        """sigma_i = exp(s_i / 2)."""
        return torch.exp(0.5 * self.log_vars.detach())

    def extra_logs(self) -> dict[str, Tensor]:
        s = self.sigma()
        return {f"sigma/{t}": s[i] for i, t in enumerate(self.tasks)}


def dwa_weights(prev: Tensor, prev2: Tensor, temperature: float) -> Tensor:
    """w_i = K softmax(r / T)_i with r_i = L_i(t-1) / L_i(t-2)."""
    r = prev / prev2.clamp_min(1e-12)
    return len(r) * torch.softmax(r / temperature, dim=0)


@WEIGHTINGS.register("dwa", aliases=("dynamic_weight_average",))
class DWAWeighting(Weighting):
    """Liu et al. 2019: weights from the ratio of the last two epochs' losses (see module doc)."""

    def __init__(self, tasks: Sequence[str], kinds: Sequence[str],
                 temperature: float = 2.0) -> None:
        super().__init__(tasks, kinds)
        check_range("multitask weighting 'dwa'", "temperature", temperature, low=0,
                    low_inclusive=False)
        self.temperature = float(temperature)
        self.register_buffer("history", torch.zeros(2, self.num_tasks))  # [L(t-2), L(t-1)]
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("weights", torch.ones(self.num_tasks))

    def combine(self, losses: Tensor, shared: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w = self.weights.to(losses.dtype)
        return (w * losses).sum(), w

    @torch.no_grad()
    def end_epoch(self, epoch_losses: Tensor) -> None:
        self.history[0] = self.history[1]
        self.history[1] = epoch_losses.detach().to(self.history)
        self.epochs_seen += 1
        if int(self.epochs_seen) >= 2:
            self.weights.copy_(dwa_weights(self.history[1], self.history[0], self.temperature))


@WEIGHTINGS.register("gradnorm")
class GradNormWeighting(Weighting):
    """Chen et al. 2018 (see module doc). `shared` is the last shared layer's weight."""

    needs_shared_grads = True

    def __init__(self, tasks: Sequence[str], kinds: Sequence[str], alpha: float = 1.5) -> None:
        super().__init__(tasks, kinds)
        check_range("multitask weighting 'gradnorm'", "alpha", alpha, low=0)
        self.alpha = float(alpha)
        self.weights = nn.Parameter(torch.ones(self.num_tasks))
        self.register_buffer("initial_losses", torch.zeros(self.num_tasks))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.last_grad_loss: Tensor | None = None

    def gradnorm_loss(self, losses: Tensor, grad_norms: Tensor) -> Tensor:
        """L_grad = sum_i |w_i g_i - mean(w g) r_i^alpha|, g_i = ||grad_W L_i|| (constant)."""
        if not bool(self.initialised):
            self.initial_losses.copy_(losses.detach())
            self.initialised.fill_(True)
        ratio = losses.detach() / self.initial_losses.clamp_min(1e-12)
        r = ratio / ratio.mean()
        g = self.weights * grad_norms.detach()
        target = (g.mean() * r.pow(self.alpha)).detach()
        return (g - target).abs().sum()

    def combine(self, losses: Tensor, shared: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w = self.weights.detach()
        total = (w * losses).sum()
        if shared is not None and torch.is_grad_enabled() and losses.requires_grad:
            norms = torch.stack([
                torch.autograd.grad(losses[i], shared, retain_graph=True)[0].norm()
                for i in range(self.num_tasks)])
            self.last_grad_loss = self.gradnorm_loss(losses, norms)
            total = total + self.last_grad_loss  # its gradient reaches `weights` only
        return total, w

    @torch.no_grad()
    def after_step(self) -> None:
        """Keep w positive and renormalise: w <- K w / sum_j w_j."""
        w = self.weights.clamp_(min=1e-3)
        w.mul_(self.num_tasks / w.sum())


def build_weighting(cfg: Mapping[str, Any] | None, tasks: Sequence[str],
                    kinds: Sequence[str]) -> Weighting:
    """From the `multitask` config: `weighting: <name>` (null -> equal) plus its parameters."""
    params = dict(cfg or {})
    name = params.pop("weighting", None) or "equal"
    return WEIGHTINGS.build(str(name), tasks=tasks, kinds=kinds, **params)
