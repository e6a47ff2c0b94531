"""Embedding (metric-learning) losses: pred [N, D] embeddings, target [N] class labels.

Pairs and triplets are formed inside the batch from the labels: same label = similar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from losslab.errors import check_choice
from losslab.losses.base import LOSSES, Loss, check_number
from losslab.losses.functional import pairwise_euclidean

DISTANCES = ("euclidean", "cosine")
MINING = ("all", "hard", "semi_hard", "random")


def pairwise_distance(x: Tensor, distance: str) -> Tensor:
    """[N, D] -> [N, N]: euclidean sqrt(max(|a - b|^2, 1e-12)) or cosine 1 - cos(a, b).

    Autocast is off here: |a|^2 + |b|^2 - 2 a.b in half precision cancels catastrophically.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        if distance == "cosine":
            xn = F.normalize(x, dim=1)
            return torch.addmm(x.new_ones(()), xn, xn.T, alpha=-1.0)
        return pairwise_euclidean(x)


def pair_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(positive, negative) [N, N] masks: same label without the diagonal, different label."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    neg = ~same
    return same.fill_diagonal_(False), neg


class EmbeddingLoss(Loss):
    """Shared arguments and shape check for in-batch pair / triplet losses."""

    kind = "embedding"

    def __init__(self, margin: float, distance: str, reduction: str) -> None:
        super().__init__(reduction)
        self.margin = check_number(self.display_name, "margin", margin, low=0)
        check_choice(self.display_name, "distance", distance, DISTANCES)
        self.distance = distance

    def check_shapes(self, pred: Tensor, target: Tensor) -> None:
        if pred.dim() != 2 or target.dim() != 1 or target.shape[0] != pred.shape[0]:
            raise self.shape_error(pred, target, "embeddings [N, D] and labels [N]")


@LOSSES.register("contrastive", aliases=("contrastive_loss",))
class ContrastiveLoss(EmbeddingLoss):
    """Contrastive loss (Hadsell, Chopra & LeCun 2006) over all pairs (i, j), j != i, in the batch.

    L_ij = 0.5 D_ij^2 if i and j share a label (similar), 0.5 max(0, margin - D_ij)^2 otherwise;
    per-sample value = mean of L_ij over the sample's N - 1 pairs (0 if N = 1).
    Gradient: similar pairs are pulled together with force D (dL/dD = D); dissimilar pairs closer
    than the margin are pushed apart with force (margin - D); farther ones contribute nothing.
    Use to learn embeddings for verification / retrieval (same-or-not decisions at a threshold).

    Label convention: the paper writes L = (1 - Y) 0.5 D^2 + Y 0.5 max(0, m - D)^2 with Y = 0 for
    SIMILAR pairs. The course notes swap it (Y = 1 = similar with the same formula), which pulls
    dissimilar pairs together. Here no Y is passed: similarity is "same class label".

    distance 'euclidean' (the paper's; D = sqrt(max(|a - b|^2, 1e-12)), so the gradient is finite,
    0, at D = 0) or 'cosine' (D = 1 - cos, in [0, 2], so use a margin below 2).
    """

    def __init__(self, margin: float = 1.0, distance: str = "euclidean",
                 reduction: str = "mean") -> None:
        super().__init__(margin, distance, reduction)

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        n = pred.shape[0]
        pos, neg = pair_masks(target)
        d = pairwise_distance(pred, self.distance)
        d2 = d.square()
        pull = (d2 * pos).sum(1)
        push = (torch.relu(self.margin - d).square() * neg).sum(1)
        return (pull + push) * (0.5 / max(n - 1, 1))


@LOSSES.register("triplet", aliases=("triplet_margin",))
class TripletLoss(EmbeddingLoss):
    """Triplet margin loss: l(a, p, n) = max(0, d(a, p) - d(a, n) + margin) (Schroff et al. 2015).

    Gradient: pulls the anchor towards p and away from n while d(a, n) < d(a, p) + margin.
    Use for ranking / retrieval embeddings (only relative distances matter); batches need several
    samples per class, or most anchors have no positive.
    Triplets come from the batch: p shares a's label (p != a), n does not. One value per anchor;
    anchors without a positive or a negative in the batch get 0 (and still count in the mean).

    mining:
      all        mean over every (p, n) of the anchor (computed in O(N^2 log N) by sorting the
                 negatives' distances, no [N, N, N] tensor)
      hard       batch-hard (Hermans et al. 2017): farthest positive, nearest negative
      semi_hard  FaceNet: for each positive the nearest negative farther than it
                 (d(a, n) > d(a, p)); if none, the farthest negative; mean over positives
      random     one random positive and one random negative (torch's global RNG)
    distance: 'euclidean' (not squared, as in torch's triplet_margin_loss;
    sqrt(max(|a - b|^2, 1e-12)), finite gradient at 0) or 'cosine' (1 - cos).
    """

    def __init__(self, margin: float = 1.0, mining: str = "all", distance: str = "euclidean",
                 reduction: str = "mean") -> None:
        super().__init__(margin, distance, reduction)
        check_choice(self.display_name, "mining", mining, MINING)
        self.mining = mining

    def per_sample(self, pred: Tensor, target: Tensor) -> Tensor:
        d = pairwise_distance(pred, self.distance)
        pos, neg = pair_masks(target)
        m = self.margin
        if self.mining == "hard":
            # no positive: d_ap = -inf; no negative: d_an = +inf; either way relu(-inf) = 0
            d_ap = d.masked_fill(neg, float("-inf"))
            d_ap.diagonal().fill_(float("-inf"))
            d_an = d.masked_fill(pos, float("inf"))
            d_an.diagonal().fill_(float("inf"))
            return torch.relu(d_ap.amax(1) - d_an.amin(1) + m)
        n_pos, n_neg = pos.sum(1), neg.sum(1)
        valid = (n_pos > 0) & (n_neg > 0)
        if self.mining == "random":
            rp = torch.rand_like(d).masked_fill_(~pos, -1.0).argmax(1, keepdim=True)
            rn = torch.rand_like(d).masked_fill_(~neg, -1.0).argmax(1, keepdim=True)
            loss = d.gather(1, rp) - d.gather(1, rn) + m
            return torch.relu(loss.squeeze(1)) * valid
        # 'all' and 'semi_hard' read each anchor's negatives' distances in ascending order
        ranked, _ = d.masked_fill(~neg, float("inf")).sort(dim=1)
        keys = ranked.detach()  # +inf past the anchor's last negative
        d_neg = ranked.masked_fill(keys.isinf(), 0.0)
        if self.mining == "semi_hard":
            # first negative with d(a, n) > d(a, p); past the last negative -> the farthest one
            idx = torch.searchsorted(keys, d.detach(), right=True)
            idx = torch.minimum(idx, (n_neg - 1).clamp_min(0).unsqueeze(1))
            per_pair = torch.relu(d - d_neg.gather(1, idx) + m) * pos
            return per_pair.sum(1) / n_pos.clamp_min(1) * valid
        # all: with t = d(a, p) + m, sum_n relu(t - d(a, n)) = c t - (sum of the c smallest
        # d(a, n)), c = #{n : d(a, n) < t}
        thresh = d + m
        count = torch.searchsorted(keys, thresh.detach())
        csum = F.pad(d_neg.cumsum(1), (1, 0))
        per_pair = (count.to(d.dtype) * thresh - csum.gather(1, count)) * pos
        return per_pair.sum(1) / (n_pos * n_neg).clamp_min(1) * valid
