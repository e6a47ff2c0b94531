"""Forward + backward time and memory of every registry loss against torch or the plain formula.

    python scripts/bench_losses.py                 # CPU (or --device cuda), reduction='mean'
    python scripts/bench_losses.py --per-sample    # reduction='none' then .mean() on both sides
    python scripts/bench_losses.py --threads 1 --skip-slow --only focal ce --repeats 500

Prints a markdown table: median time over `--repeats` runs after `--warmup` runs (ours, the
reference and, for focal, bce / ce alternate inside one loop, so drift and load hit all alike),
the ratio ours / reference by median and by minimum (the minimum is the steadier number on a busy
machine), the bytes autograd saves for backward (counted with saved_tensors_hooks, any device),
and on CUDA the peak allocated memory. Targets: ratio <= 1.2 against torch built-ins; focal
within 1.3x of bce / ce. The [4096, 4096]-pair embedding rows take minutes on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from losslab.losses import LOSSES

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Case:
    label: str  # loss name and parameters as shown in the table
    name: str
    params: dict
    inputs: Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]]
    reference: Fn | None  # reduction='none' form; None: no affordable reference
    ref_label: str
    slow: bool = False  # [N, N]-sized work: fewer repeats


def vec(n: int = 65536, cols: int | None = None, target: str = "real"):
    def make(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        shape = (n,) if cols is None else (n, cols)
        pred = torch.randn(shape, generator=g) * 2
        if target == "real":
            y = torch.randn(n, generator=g)
        elif target == "binary_float":
            y = (torch.rand(n, generator=g) > 0.5).float()
        elif target == "soft":  # label-smoothed binary targets, 0.05 / 0.95
            y = (torch.rand(n, generator=g) > 0.5).float() * 0.9 + 0.05
        else:  # binary_long
            y = (torch.rand(n, generator=g) > 0.5).long()
        return pred.to(device), y.to(device)

    return make


def mat(n: int = 4096, c: int = 10, target: str = "labels"):
    def make(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        pred = torch.randn(n, c, generator=g) * 2
        if target == "labels":
            y = torch.randint(0, c, (n,), generator=g)
        elif target == "probs":
            y = torch.softmax(torch.randn(n, c, generator=g), 1)
        else:  # embedding labels: 64 classes
            y = torch.randint(0, 64, (n,), generator=g)
        return pred.to(device), y.to(device)

    return make


# ----------------------------------------------------------------------------- references


def tv_focal(z: torch.Tensor, y: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """torchvision.ops.sigmoid_focal_loss (reduction='none')."""
    y = y.to(z.dtype)
    p = torch.sigmoid(z)
    ce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    return (alpha * y + (1 - alpha) * (1 - y)) * loss


def softmax_focal(z: torch.Tensor, y: torch.Tensor, gamma: float = 2.0):
    logp = torch.log_softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    return -((1 - logp.exp()) ** gamma) * logp


def pinball(pred: torch.Tensor, y: torch.Tensor, taus=(0.1, 0.5, 0.9)):
    tau = torch.tensor(taus, device=pred.device, dtype=pred.dtype)
    u = y[:, None] - pred
    return torch.maximum(tau * u, (tau - 1) * u).mean(1)


def gaussian_nll(pred: torch.Tensor, y: torch.Tensor):
    return F.gaussian_nll_loss(pred[:, 0], y, pred[:, 1].exp(), reduction="none")


def hinge_binary(z: torch.Tensor, y: torch.Tensor):
    return torch.relu(1 - (2 * y.to(z.dtype) - 1) * z)


def kl_ref(z: torch.Tensor, q: torch.Tensor):
    return F.kl_div(torch.log_softmax(z, 1), q, reduction="none").sum(1)


def contrastive_ref(x: torch.Tensor, y: torch.Tensor, m: float = 1.0):
    d = torch.cdist(x, x)
    same = (y[:, None] == y[None, :]).to(x.dtype)
    eye = torch.eye(len(x), device=x.device, dtype=x.dtype)
    loss = 0.5 * (same - eye) * d**2 + 0.5 * (1 - same) * torch.relu(m - d) ** 2
    return loss.sum(1) / (len(x) - 1)


def triplet_hard_ref(x: torch.Tensor, y: torch.Tensor, m: float = 1.0):
    d = torch.cdist(x, x)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    d_ap = d.masked_fill(~same | eye, float("-inf")).amax(1)
    d_an = d.masked_fill(same, float("inf")).amin(1)
    return torch.relu(d_ap - d_an + m)


def triplet_all_ref(x: torch.Tensor, y: torch.Tensor, m: float = 1.0):
    """Every (a, p, n) as an [N, N, N] tensor: the plain formula."""
    d = torch.cdist(x, x)
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    pos, neg = same & ~eye, ~same
    valid = pos[:, :, None] & neg[:, None, :]
    loss = torch.relu(d[:, :, None] - d[:, None, :] + m) * valid
    return loss.sum((1, 2)) / valid.sum((1, 2)).clamp_min(1)


def builtin(fn, **kw) -> Fn:
    return lambda p, t: fn(p, t.to(p.dtype) if t.is_floating_point() else t, reduction="none",
                           **kw)


CASES = [
    Case("mse", "mse", {}, vec(), builtin(F.mse_loss), "F.mse_loss"),
    Case("mae", "mae", {}, vec(), builtin(F.l1_loss), "F.l1_loss"),
    Case("huber", "huber", {"delta": 1.0}, vec(), builtin(F.huber_loss), "F.huber_loss"),
    Case("smooth_l1", "smooth_l1", {"beta": 1.0}, vec(), builtin(F.smooth_l1_loss),
         "F.smooth_l1_loss"),
    Case("log_cosh", "log_cosh", {}, vec(), lambda p, t: torch.log(torch.cosh(p - t)),
         "log(cosh(r))"),
    Case("quantile q=(.1,.5,.9)", "quantile", {"quantiles": [0.1, 0.5, 0.9]}, vec(cols=3),
         pinball, "plain pinball"),
    Case("gaussian_nll", "gaussian_nll", {}, vec(cols=2), gaussian_nll, "F.gaussian_nll_loss"),
    Case("bce", "bce", {}, vec(target="binary_float"),
         lambda z, y: F.binary_cross_entropy_with_logits(z, y, reduction="none"), "F.bce_logits"),
    Case("focal binary, float y", "focal", {"gamma": 2.0, "alpha": 0.25},
         vec(target="binary_float"), tv_focal, "torchvision formula"),
    Case("focal binary, soft y", "focal", {"gamma": 2.0, "alpha": 0.25},
         vec(target="soft"), tv_focal, "torchvision formula"),
    Case("focal binary, long y", "focal", {"gamma": 2.0, "alpha": 0.25},
         vec(target="binary_long"), tv_focal, "torchvision formula"),
    Case("focal binary g=0.5, long y", "focal", {"gamma": 0.5, "alpha": 0.25},
         vec(target="binary_long"), lambda z, y: tv_focal(z, y, gamma=0.5),
         "torchvision formula"),
    Case("hinge binary", "hinge", {}, vec(target="binary_long"), hinge_binary, "relu(1 - y f)"),
    Case("ce", "ce", {}, mat(), builtin(F.cross_entropy), "F.cross_entropy"),
    Case("ce ls=0.1", "ce", {"label_smoothing": 0.1}, mat(),
         builtin(F.cross_entropy, label_smoothing=0.1), "F.cross_entropy"),
    Case("focal multi-class", "focal", {"gamma": 2.0, "alpha": None}, mat(), softmax_focal,
         "plain formula"),
    Case("hinge multi-class", "hinge", {}, mat(), builtin(F.multi_margin_loss),
         "F.multi_margin_loss"),
    Case("kl", "kl", {}, mat(target="probs"), kl_ref, "F.kl_div"),
    Case("contrastive", "contrastive", {}, mat(target="emb"), contrastive_ref, "cdist formula",
         slow=True),
    Case("triplet hard", "triplet", {"mining": "hard"}, mat(target="emb"), triplet_hard_ref,
         "cdist formula", slow=True),
    Case("triplet all", "triplet", {"mining": "all"}, mat(target="emb"), None, "-", slow=True),
    Case("triplet semi_hard", "triplet", {"mining": "semi_hard"}, mat(target="emb"), None, "-",
         slow=True),
    Case("triplet all [256,10]", "triplet", {"mining": "all"}, mat(n=256, target="emb"),
         triplet_all_ref, "[N,N,N] formula"),
    Case("combo ce+0.5 focal", "combo",
         {"terms": [{"name": "ce"}, {"name": "focal", "weight": 0.5, "params": {"alpha": None}}]},
         mat(), lambda z, y: F.cross_entropy(z, y, reduction="none") + 0.5 * softmax_focal(z, y),
         "ce + plain focal"),
]

# rows also timed against another registry loss (the focal target: within 1.3x of bce / ce)
SIBLINGS = {"focal binary, float y": "bce", "focal binary, soft y": "bce",
            "focal binary, long y": "bce",
            "focal binary g=0.5, long y": "bce", "focal multi-class": "ce"}


def saved_bytes(fn: Fn, pred: torch.Tensor, target: torch.Tensor) -> int:
    """Bytes autograd keeps for backward (distinct storages), i.e. the loss's activation memory."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.data_ptr() != pred.data_ptr():  # the input itself is not the loss's memory
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    p = pred.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(p, target).backward()
    return sum(seen.values())


def step(fn: Fn, pred: torch.Tensor, target: torch.Tensor) -> None:
    pred.grad = None
    fn(pred, target).backward()


def bench_pair(fns: list[Fn], pred, target, repeats: int, warmup: int,
               sync) -> list[tuple[float, float]]:
    """(median, min) seconds per forward+backward for each fn, alternating them each repeat."""
    times: list[list[float]] = [[] for _ in fns]
    for i in range(warmup + repeats):
        for k, fn in enumerate(fns):
            sync()
            t0 = time.perf_counter()
            step(fn, pred, target)
            sync()
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    return [(statistics.median(t), min(t)) for t in times]


def peak_cuda(fn: Fn, pred, target) -> int | None:
    if pred.device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step(fn, pred, target)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def fmt_time(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e6:,.0f} µs" if s < 0.01 else f"{s * 1e3:,.1f} ms"


def fmt_bytes(b: int | None) -> str:
    if b is None:
        return "N/A"
    return f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 2**10:.0f} KiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--per-sample", action="store_true",
                    help="reduction='none' + .mean() (the task's path) instead of 'mean'")
    ap.add_argument("--only", nargs="*", help="registry names to run")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--skip-slow", action="store_true", help="skip the [4096, 4096] pair rows")
    ap.add_argument("--json", default=None, help="also write the table rows here (JSON)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def mean_of(fn: Fn) -> Fn:
        return lambda p, t: fn(p, t).mean()

    reduction = "none" if args.per_sample else "mean"
    rows = []
    for case in CASES:
        if args.only and case.name not in args.only:
            continue
        if case.slow and args.skip_slow:
            continue
        pred, target = case.inputs(device)
        pred.requires_grad_()
        loss = LOSSES.build(case.name, reduction=reduction, **case.params).to(device)
        ours: Fn = mean_of(loss) if args.per_sample else loss
        fns = [ours] + ([mean_of(case.reference)] if case.reference is not None else [])
        sibling = SIBLINGS.get(case.label)
        if sibling is not None:  # timed in the same interleaved loop, so load hits both alike
            sib = LOSSES.build(sibling, reduction=reduction).to(device)
            fns.append(mean_of(sib) if args.per_sample else sib)
        repeats = max(3, args.repeats // 40) if case.slow else args.repeats
        warmup = max(2, args.warmup // 10) if case.slow else args.warmup
        result = bench_pair(fns, pred, target, repeats, warmup, sync)
        (t_ours, m_ours) = result[0]
        t_ref, m_ref = result[1] if case.reference is not None else (None, None)
        vs_sibling = ""
        if sibling is not None:
            t_sib, m_sib = result[-1]
            vs_sibling = f"{t_ours / t_sib:.2f}x {sibling} ({m_ours / m_sib:.2f}x)"
        rows.append([
            case.label, "x".join(map(str, pred.shape)), fmt_time(t_ours), case.ref_label,
            fmt_time(t_ref), "-" if t_ref is None else f"{t_ours / t_ref:.2f}",
            "-" if m_ref is None else f"{m_ours / m_ref:.2f}", vs_sibling,
            fmt_bytes(saved_bytes(ours, pred, target)),
            "-" if case.reference is None else
            fmt_bytes(saved_bytes(mean_of(case.reference), pred, target)),
            fmt_bytes(peak_cuda(ours, pred, target)),
        ])
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU, {torch.get_num_threads()} threads")
    print(f"Forward+backward, reduction={'none then .mean()' if args.per_sample else 'mean'}, "
          f"median of {args.repeats} (slow rows {max(3, args.repeats // 40)}), {dev}, "
          f"torch {torch.__version__}\n")
    head = ["loss", "pred", "ours", "reference", "ref time", "ratio", "ratio (min)", "focal vs",
            "saved (ours)", "saved (ref)", "peak CUDA"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps([dict(zip(head, row, strict=True))
                                               for row in rows], indent=2))


if __name__ == "__main__":
    main()
