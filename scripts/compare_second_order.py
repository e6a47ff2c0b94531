"""Compare first- and second-order optimizers on a small full-batch regression.

Problem: an MLP (10-32-32-1, tanh) fitted by full-batch MSE to sklearn's diabetes data
(442 x 10, features and target standardised; bundled with scikit-learn, no download).
For each optimizer and seed we run until the training MSE reaches `--target` (or the
step/time budget runs out) and report: optimizer steps, loss+gradient evaluations
(closure calls), curvature products (Hessian- or GGN-vector products, each costs about
one or two backward passes), wall time, and the final loss. Medians over seeds.

    PYTHONPATH=src python scripts/compare_second_order.py [--target 0.01] [--seeds 3]

Second-order entries:
    lbfgs                   torch L-BFGS, strong-Wolfe line search, one iteration per step
    newton_cg               Hessian-free, exact double-backward Hessian-vector products
    newton_cg (fd)          Hessian-free with the standard closure (as under Lightning):
                            finite-difference Hessian-vector products, one closure call each
    natural_gradient        generalised Gauss-Newton (= Fisher for MSE) products + CG
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from losslab.optim import OPTIMIZERS


def load_data(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    return torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype).unsqueeze(1)


def make_model(seed: int, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, 1)).to(dtype)


# name -> (registry name, kwargs, closure form, max steps)
CONFIGS: dict[str, tuple[str, dict[str, Any], str, int]] = {
    "adam (lr 1e-2)": ("adam", {"lr": 1e-2}, "none", 20000),
    "lbfgs": ("lbfgs", {"max_iter": 1, "history_size": 50}, "standard", 5000),
    "newton_cg": ("newton_cg", {"max_cg_iters": 50}, "graph", 500),
    "newton_cg (fd)": ("newton_cg", {"max_cg_iters": 50}, "standard", 500),
    "natural_gradient": ("natural_gradient", {"max_cg_iters": 50}, "outputs", 500),
}


def run(label: str, seed: int, x: torch.Tensor, y: torch.Tensor, target: float,
        time_budget: float) -> dict[str, Any]:
    name, kwargs, form, max_steps = CONFIGS[label]
    model = make_model(seed, x.dtype)
    opt = OPTIMIZERS.build(name, model.parameters(), **kwargs)
    evals = 0

    def closure() -> Any:
        nonlocal evals
        evals += 1
        out = model(x)
        loss = ((out - y) ** 2).mean()
        if form == "graph":
            return loss
        if form == "outputs":
            return loss, out
        opt.zero_grad()
        if torch.is_grad_enabled():
            loss.backward()
        return loss

    def mse() -> float:
        with torch.no_grad():
            return float(((model(x) - y) ** 2).mean())

    products = 0
    steps, reached = 0, None
    start = time.perf_counter()
    while steps < max_steps and time.perf_counter() - start < time_budget:
        if form == "none":
            closure()
            opt.step()
        else:
            opt.step(closure)
            last = getattr(opt, "last", None)
            if last and form != "standard":
                products += last["cg_iters"] + 1  # CG products + one for the model decrease
        steps += 1
        if mse() <= target:
            reached = time.perf_counter() - start
            break
    wall = time.perf_counter() - start
    return dict(steps=steps, evals=evals, products=products, wall=wall, reached=reached,
                final=mse())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", type=float, default=0.01, help="training MSE to reach")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--time-budget", type=float, default=30.0, help="seconds per run")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="subset of optimizer labels")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    x, y = load_data(dtype)
    print(f"diabetes MLP regression, N={len(x)}, {args.dtype}, target train MSE {args.target}, "
          f"medians over {args.seeds} seeds (a run that misses the target counts its budget)\n")
    header = (f"| {'optimizer':<18} | reached | {'steps':>6} | {'loss+grad evals':>15} | "
              f"{'curv. products':>14} | {'time (s)':>8} | {'final MSE':>9} |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    labels = args.only or list(CONFIGS)
    for label in labels:
        rs = [run(label, seed, x, y, args.target, args.time_budget) for seed in range(args.seeds)]
        med: Callable[[str], float] = lambda k, rs=rs: statistics.median(r[k] for r in rs)  # noqa: E731
        hit = sum(r["reached"] is not None for r in rs)
        print(f"| {label:<18} | {hit}/{len(rs):<5} | {med('steps'):>6.0f} | "
              f"{med('evals'):>15.0f} | {med('products'):>14.0f} | {med('wall'):>8.2f} | "
              f"{med('final'):>9.4f} |")


if __name__ == "__main__":
    main()
