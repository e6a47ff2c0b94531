"""Curriculum learning and sample weighting, without Lightning: the weights w_i of the
training loss mean_i(w_i l_i) (`losslab.callbacks.curriculum.Curriculum` applies them).

Each sample's *difficulty* d_i is its current loss l_i (``difficulty: loss``) or an exponential
moving average per sample index, e_i <- decay e_i + (1 - decay) l_i (``difficulty: ema``; a
sample's first loss starts its average). Strategies (``strategy``):

* ``none``               w = 1; the callback does nothing.
* ``self_paced_hard``    w = 1[d < lam]                       (Kumar, Packer & Koller 2010)
* ``self_paced_linear``  w = clip(1 - d / lam, 0, 1)          (Jiang et al. 2015)
    lam_e = lam0 * lam_growth^e after e epochs of curriculum; lam0 = ``lam``, or (``lam: null``)
    the ``init_fraction`` quantile of the difficulties of the first curriculum batch.
* ``pacing``             w = 1[d <= d_(k)], k = ceil(p(t) M): the easiest fraction p(t) of the
                         (global) batch of M samples (Hacohen & Weinshall 2019); p(t) grows
                         from start_fraction to end_fraction (`pacing_fraction`).
* ``anti``               the hardest fraction p(t) instead: w = 1[d >= d_(M-k+1)].
* ``superloss``          w = sigma* = exp(-W(max(-1/e, beta / 2))), beta = (d - tau) / lam
                         (Castells, Weinzaepfel & Revaud 2020); W is Lambert's W (`lambert_w`).
    SuperLoss is L = (l - tau) sigma + lam (log sigma)^2 with sigma at its minimiser sigma*,
    which is a function of l that the paper treats as a constant. With sigma detached,
    dL/dtheta = sigma* dl/dtheta, so the weight w = sigma* gives exactly SuperLoss's gradient;
    the rest, -tau sigma* + lam (log sigma*)^2, is constant in theta and is not added to the
    training loss (it is logged as ``curriculum/superloss``). tau is ``superloss_tau`` or
    (null) an EMA of the batch-mean difficulty with decay ``tau_decay``.

With ``normalize`` (default) the weights are divided by their batch mean, w_i / mean_j w_j, so
the loss scale (and the effective learning rate) does not jump when the active fraction changes;
an all-zero batch stays all-zero (that step learns nothing). ``warmup_epochs`` of plain
training (w = 1) come first; difficulties and tau are still tracked during the warmup.

DDP: the losses and indices of every rank are all-gathered each step (one collective), so the
thresholds, quantiles, tau, lam0, the EMA table and the normalising mean are computed from the
global batch and are identical on every rank. Nothing reaches the host on the hot path:
thresholds stay tensors; scalars and histograms are read on logging steps only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from losslab.errors import UserError, check_choice, check_range

STRATEGIES = ("none", "self_paced_hard", "self_paced_linear", "pacing", "anti", "superloss")
PACING_FUNCTIONS = ("linear", "root", "geometric", "step")
OWNER = "curriculum"
_INV_E = math.exp(-1.0)


# -- formulas (tensors in, tensors out; no host syncs) ------------------------------------
def lambert_w(x: Tensor, iterations: int = 8) -> Tensor:
    """Principal branch W0 of Lambert's W, W(x) e^W(x) = x, for x >= -1/e (clamped there).

    Halley's iteration w <- w - f / (e^w (w + 1) - (w + 2) f / (2w + 2)), f = w e^w - x, from
    a branch-point series (x near -1/e), log1p(x) (moderate x) or log x - log log x (large x);
    a fixed number of iterations, in float64 (float32 on MPS), on device without syncs.
    """
    dtype = torch.float32 if x.device.type == "mps" else torch.float64  # MPS has no float64
    xd = x.to(dtype).clamp_min(-_INV_E)
    p = torch.sqrt((2.0 * (math.e * xd + 1.0)).clamp_min(0.0))
    near_branch = -1.0 + p - p * p / 3.0 + 11.0 / 72.0 * p ** 3
    lx = torch.log(xd.clamp_min(3.0))
    large = lx - torch.log(lx)
    w = torch.where(xd < -0.25, near_branch, torch.where(xd < 3.0, torch.log1p(xd), large))
    for _ in range(iterations):
        ew = torch.exp(w)
        f = w * ew - xd
        wp1 = w + 1.0
        denom = ew * wp1 - (w + 2.0) * f / (2.0 * wp1)
        step = torch.where(wp1.abs() > 1e-10, f / denom, torch.zeros_like(f))
        w = torch.where(torch.isfinite(step), w - step, w)
    return w.clamp_min(-1.0).to(x.dtype if x.is_floating_point() else torch.float32)


def superloss_sigma(loss: Tensor, tau: Tensor | float, lam: float) -> Tensor:
    """SuperLoss confidence sigma* = exp(-W(max(-1/e, (loss - tau) / (2 lam)))), in (0, e]."""
    beta = (loss - tau) / lam
    return torch.exp(-lambert_w(torch.clamp(0.5 * beta, min=-_INV_E)))


def superloss_value(loss: Tensor, tau: Tensor | float, lam: float, sigma: Tensor) -> Tensor:
    """SuperLoss (l - tau) sigma + lam (log sigma)^2, per sample."""
    return (loss - tau) * sigma + lam * torch.log(sigma) ** 2


def self_paced_weights(difficulty: Tensor, lam: Tensor | float, linear: bool = False) -> Tensor:
    """Hard: w = 1[d < lam]. Linear: w = clip(1 - d / lam, 0, 1)."""
    if linear:
        return (1.0 - difficulty / lam).clamp(0.0, 1.0)
    return (difficulty < lam).to(difficulty.dtype)


def pacing_fraction(progress: float, function: str = "linear", start: float = 0.2,
                    end: float = 1.0, full_at: float = 0.8, steps: int = 4) -> float:
    """p(t): the fraction of each batch that trains at progress t in [0, 1].

    With s = clip(t / full_at, 0, 1), p0 = start, p1 = end:
    linear p0 + (p1 - p0) s;  root sqrt(p0^2 + (p1^2 - p0^2) s);  geometric p0 (p1 / p0)^s;
    step p0 + (p1 - p0) floor(steps s) / steps.
    """
    s = min(max(progress / full_at, 0.0), 1.0)
    if function == "linear":
        return start + (end - start) * s
    if function == "root":
        return math.sqrt(start ** 2 + (end ** 2 - start ** 2) * s)
    if function == "geometric":
        return start * (end / start) ** s
    if function == "step":
        return start + (end - start) * math.floor(steps * s) / steps
    raise UserError(f"{OWNER}: unknown pacing function {function!r}.")


def keep_threshold(difficulty: Tensor, fraction: float, hardest: bool = False) -> Tensor:
    """The cut-off that keeps k = ceil(fraction M) of M difficulties: the k-th smallest (keep
    d <= it) or, with `hardest`, the k-th largest (keep d >= it). Ties may keep a few more."""
    m = difficulty.numel()
    k = min(max(math.ceil(fraction * m - 1e-9), 1), m)
    return torch.kthvalue(difficulty, m - k + 1 if hardest else k).values


def normalize_weights(w: Tensor, reference: Tensor | None = None) -> Tensor:
    """w / mean(reference) (reference = w by default); an all-zero reference leaves w at zero."""
    ref = w if reference is None else reference
    return w / ref.mean().clamp_min(1e-12)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_cat(t: Tensor) -> Tensor:
    """Concatenate `t` of every rank in rank order (identity in one process). Needs equal
    shapes on every rank (both losslab loaders give every rank the same batch sizes)."""
    _, world = _rank_world()
    if world == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world)]
    torch.distributed.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def gather_batch(idx: Tensor, loss: Tensor) -> tuple[Tensor, Tensor]:
    """(indices, float32 losses) of the global batch, in one collective: the losses' bits
    travel as int64 next to the indices (exact, and no float64, which MPS lacks)."""
    if _rank_world()[1] == 1:
        return idx, loss
    bits = loss.float().contiguous().view(torch.int32).long()
    packed = gather_cat(torch.stack([idx.to(loss.device).long(), bits], 1))
    return packed[:, 0], packed[:, 1].int().view(torch.float32)


class CurriculumWeights:
    """The configuration and running state (lam0, tau, EMA table) of a curriculum, and
    `weights(idx, loss)`; see the module docstring for the formulas."""

    def __init__(self, strategy: str = "none", difficulty: str = "loss", ema_decay: float = 0.9,
                 warmup_epochs: int = 0, normalize: bool = True,
                 lam: float | None = None, lam_growth: float = 1.1, init_fraction: float = 0.5,
                 pacing: str = "linear", start_fraction: float = 0.2, end_fraction: float = 1.0,
                 full_at: float = 0.8, pacing_steps: int = 4,
                 superloss_lam: float = 1.0, superloss_tau: float | None = None,
                 tau_decay: float = 0.9, histograms: bool = True) -> None:
        check_choice(OWNER, "strategy", strategy, STRATEGIES)
        check_choice(OWNER, "difficulty", difficulty, ("loss", "ema"))
        check_choice(OWNER, "pacing", pacing, PACING_FUNCTIONS)
        check_range(OWNER, "ema_decay", ema_decay, low=0, high=1, high_inclusive=False)
        check_range(OWNER, "tau_decay", tau_decay, low=0, high=1, high_inclusive=False)
        check_range(OWNER, "warmup_epochs", warmup_epochs, low=0)
        check_range(OWNER, "lam", lam, low=0, low_inclusive=False, allow_none=True)
        check_range(OWNER, "lam_growth", lam_growth, low=1)
        check_range(OWNER, "superloss_lam", superloss_lam, low=0, low_inclusive=False)
        check_range(OWNER, "superloss_tau", superloss_tau, allow_none=True)
        for key, value in (("init_fraction", init_fraction), ("start_fraction", start_fraction),
                           ("end_fraction", end_fraction), ("full_at", full_at)):
            check_range(OWNER, key, value, low=0, high=1, low_inclusive=False)
        check_range(OWNER, "pacing_steps", pacing_steps, low=1)
        self.strategy, self.difficulty, self.ema_decay = strategy, difficulty, float(ema_decay)
        self.warmup_epochs, self.normalize = int(warmup_epochs), bool(normalize)
        self.lam = None if lam is None else float(lam)
        self.lam_growth, self.init_fraction = float(lam_growth), float(init_fraction)
        self.pacing, self.start_fraction = pacing, float(start_fraction)
        self.end_fraction, self.full_at = float(end_fraction), float(full_at)
        self.pacing_steps = int(pacing_steps)
        self.superloss_lam, self.tau_decay = float(superloss_lam), float(tau_decay)
        self.superloss_tau = None if superloss_tau is None else float(superloss_tau)
        self.histograms = bool(histograms)
        # schedule position, set by the hooks (host floats; tests may set them directly)
        self.in_warmup, self.progress, self.curriculum_epoch = False, 0.0, 0
        # running state (device tensors), saved in checkpoints
        self.lam0: Tensor | None = None
        self.tau: Tensor | None = None
        self.ema: Tensor | None = None            # per-sample EMA difficulty (nan: never seen)
        self.epoch_difficulty: Tensor | None = None  # difficulty when last seen this epoch
        self.num_samples: int | None = None
        self.last: dict[str, Tensor] = {}         # last step's statistics, for logging
        self._checked = False
        self._noisy: Tensor | None = None

    @property
    def active(self) -> bool:
        return self.strategy != "none"

    # -- the weighting ----------------------------------------------------------------------
    def weights(self, idx: Tensor, loss: Tensor) -> Tensor:
        """Weights [N] for this rank's per-sample losses `loss` [N] of samples `idx` [N]."""
        if not self._checked:
            if loss.dim() != 1 or idx.dim() != 1 or loss.shape[0] != idx.shape[0]:
                raise UserError(
                    f"{OWNER}: needs one loss per sample (shape [N]) and sample indices [N]; got "
                    f"losses of shape {tuple(loss.shape)} and indices {tuple(idx.shape)}. Use a "
                    "loss that returns per-sample values and batches (x, y, idx).")
            self._checked = True
        loss = loss.detach().float()
        n = loss.shape[0]
        idx_g, loss_g = gather_batch(idx, loss)
        rank, _ = _rank_world()
        local = slice(rank * n, (rank + 1) * n)
        d_g = self._difficulty(idx_g, loss_g)
        if self.strategy == "superloss" and self.superloss_tau is None:
            mean = d_g.mean()
            self.tau = mean if self.tau is None else \
                self.tau_decay * self.tau.to(mean.device) + (1 - self.tau_decay) * mean
        if self.in_warmup or not self.active:
            w_g = torch.ones_like(d_g)
            self.last = {"weights": w_g, "idx": idx_g}
            return w_g[local].to(loss.dtype)
        w_g, threshold = self._strategy_weights(d_g)
        w = normalize_weights(w_g[local], w_g) if self.normalize else w_g[local]
        self.last = {"weights": normalize_weights(w_g) if self.normalize else w_g,
                     "idx": idx_g, "threshold": threshold,
                     "active_fraction": (w_g > 0).float().mean()}
        if self.strategy == "superloss":
            self.last["superloss"] = superloss_value(d_g, self._tau(), self.superloss_lam,
                                                     w_g).mean()
        return w

    def _difficulty(self, idx: Tensor, loss: Tensor) -> Tensor:
        """d for the global batch; updates the EMA table and the epoch's difficulty record."""
        if self.num_samples is None:
            return loss
        if self.ema is None or self.epoch_difficulty is None or self.ema.device != loss.device:
            self._allocate(loss.device)
        assert self.ema is not None and self.epoch_difficulty is not None
        if self.difficulty == "ema":
            prev = self.ema[idx]
            d = torch.where(torch.isnan(prev), loss,
                            self.ema_decay * prev + (1 - self.ema_decay) * loss)
            self.ema[idx] = d
        else:
            d = loss
        self.epoch_difficulty[idx] = d
        return d

    def _allocate(self, device: torch.device) -> None:
        n = int(self.num_samples or 0)
        ema = self.ema.to(device) if self.ema is not None and self.ema.numel() == n else None
        self.ema = ema if ema is not None else torch.full((n,), math.nan, device=device)
        self.epoch_difficulty = torch.full((n,), math.nan, device=device)

    def _tau(self) -> Tensor | float:
        if self.superloss_tau is not None:
            return self.superloss_tau
        assert self.tau is not None
        return self.tau

    def current_fraction(self) -> float:
        """p(t) of the pacing function at the current progress."""
        return pacing_fraction(self.progress, self.pacing, self.start_fraction,
                               self.end_fraction, self.full_at, self.pacing_steps)

    def current_lam(self, difficulty: Tensor) -> Tensor:
        """lam0 * lam_growth^e; lam0 from the first curriculum batch if `lam` is null."""
        if self.lam0 is None:
            self.lam0 = torch.quantile(difficulty, self.init_fraction) if self.lam is None \
                else torch.tensor(self.lam, device=difficulty.device)
        elif self.lam0.device != difficulty.device:  # restored from a checkpoint
            self.lam0 = self.lam0.to(difficulty.device)
        return self.lam0 * self.lam_growth ** self.curriculum_epoch

    def _strategy_weights(self, d: Tensor) -> tuple[Tensor, Tensor]:
        """(weights of the global batch, threshold) for the configured strategy."""
        if self.strategy in ("self_paced_hard", "self_paced_linear"):
            lam = self.current_lam(d)
            return self_paced_weights(d, lam, self.strategy == "self_paced_linear"), lam
        if self.strategy in ("pacing", "anti"):
            hardest = self.strategy == "anti"
            thr = keep_threshold(d, self.current_fraction(), hardest=hardest)
            return ((d >= thr) if hardest else (d <= thr)).to(d.dtype), thr
        tau = self._tau()
        sigma = superloss_sigma(d, tau, self.superloss_lam)
        return sigma, torch.as_tensor(tau, dtype=d.dtype, device=d.device)

    # -- checkpointing ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"lam0": self.lam0, "tau": self.tau, "ema": self.ema}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.lam0, self.tau = state_dict.get("lam0"), state_dict.get("tau")
        self.ema = state_dict.get("ema")
