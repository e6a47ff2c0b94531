"""Lesson 13's 2-D toy surfaces and torch.optim trajectories on them.

saddle(x, y) = x²/2 + y⁴/4 − y²/2: a saddle point at (0, 0) (Hessian diag(1, −1)) between two
minima at (0, ±1) with f = −1/4. Started at (1, 1e-3), almost on the saddle's stable manifold,
the gradient along y is ~1e-3: plain gradient descent sits on the saddle for a long time.
rosenbrock(x, y) = (1 − x)² + 100 (y − x²)²: a long curved, nearly flat valley (a plateau along the
valley floor), minimum at (1, 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def saddle(x: Tensor, y: Tensor) -> Tensor:
    return 0.5 * x**2 + 0.25 * y**4 - 0.5 * y**2


def rosenbrock(x: Tensor, y: Tensor) -> Tensor:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


@dataclass
class Surface:
    name: str
    fn: Callable[[Tensor, Tensor], Tensor]
    start: tuple[float, float]
    minimum: float
    extent: tuple[float, float, float, float]   # xmin, xmax, ymin, ymax of the plot
    steps: int
    optimizers: dict[str, Callable[[list[Tensor]], torch.optim.Optimizer]]


def lbfgs(params: list[Tensor]) -> torch.optim.Optimizer:
    """One L-BFGS iteration per step, with a strong-Wolfe line search (<= 25 evaluations)."""
    return torch.optim.LBFGS(params, lr=1, max_iter=1, max_eval=25, history_size=10,
                             line_search_fn="strong_wolfe")


def surfaces(quick: bool = False) -> list[Surface]:
    """The two surfaces, each with its optimizers and step sizes (chosen per surface, stated)."""
    saddle_opts = {
        "sgd lr=0.05": lambda p: torch.optim.SGD(p, lr=0.05),
        "momentum lr=0.05 β=0.9": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        "nesterov lr=0.05 β=0.9": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9,
                                                              nesterov=True),
        "rmsprop lr=0.01": lambda p: torch.optim.RMSprop(p, lr=0.01),
        "adam lr=0.05": lambda p: torch.optim.Adam(p, lr=0.05),
        "L-BFGS lr=1": lbfgs,
    }
    rosen_opts = {
        "sgd lr=1e-3": lambda p: torch.optim.SGD(p, lr=1e-3),
        "momentum lr=1e-3 β=0.9": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
        "nesterov lr=1e-3 β=0.9": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9,
                                                              nesterov=True),
        "rmsprop lr=1e-2": lambda p: torch.optim.RMSprop(p, lr=1e-2),
        "adam lr=0.05": lambda p: torch.optim.Adam(p, lr=0.05),
        "L-BFGS lr=1": lbfgs,
    }
    n = 1000 if quick else 2000
    return [Surface("saddle", saddle, (1.0, 1e-3), -0.25, (-1.2, 1.2, -1.5, 1.5), n, saddle_opts),
            Surface("rosenbrock", rosenbrock, (-1.5, 2.0), 0.0, (-2.0, 2.0, -1.0, 3.0), n,
                    rosen_opts)]


def trajectory(surface: Surface, make: Callable[[list[Tensor]], torch.optim.Optimizer]
               ) -> np.ndarray:
    """(steps + 1, 3) array of x, y, f along the optimizer's path (float64)."""
    p = torch.tensor(surface.start, dtype=torch.float64, requires_grad=True)
    opt = make([p])
    with torch.no_grad():
        path = [[*p.detach().tolist(), float(surface.fn(p[0], p[1]))]]

    def closure() -> Tensor:
        opt.zero_grad()
        loss = surface.fn(p[0], p[1])
        loss.backward()
        return loss

    for _ in range(surface.steps):
        opt.step(closure)
        with torch.no_grad():
            value = float(surface.fn(p[0], p[1]))
        path.append([*p.detach().tolist(), value])
        if not np.isfinite(value):
            break
    return np.asarray(path)


def steps_to(path: np.ndarray, target: float) -> int | None:
    """First step at which f <= target, or None."""
    hit = np.nonzero(path[:, 2] <= target)[0]
    return int(hit[0]) if len(hit) else None


def plot(surface: Surface, paths: dict[str, np.ndarray], path: Path) -> Path:
    """Contours of the surface with every optimizer's trajectory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x0, x1, y0, y1 = surface.extent
    xs, ys = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
    zs = surface.fn(torch.from_numpy(xs), torch.from_numpy(ys)).numpy()
    fig, ax = plt.subplots(figsize=(6.0, 4.8))
    levels = np.logspace(-1, 3.5, 25) if surface.name == "rosenbrock" else 25
    ax.contour(xs, ys, zs, levels=levels, cmap="Greys", linewidths=0.6)
    for label, pts in paths.items():
        ax.plot(pts[:, 0], pts[:, 1], lw=1.2, label=label)
    ax.plot(*surface.start, "ko", ms=4)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_title(f"Lesson 13: {surface.name}, {surface.steps} steps from {surface.start}",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
