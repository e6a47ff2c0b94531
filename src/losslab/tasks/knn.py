"""k-nearest-neighbour accuracy of embeddings: how embedding losses are evaluated."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def embed(model: nn.Module, x: Tensor, device: torch.device, batch_size: int = 1024) -> Tensor:
    """Embeddings of `x`, computed in batches in eval mode."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size].to(device)) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


@torch.no_grad()
def knn_accuracy(ref: Tensor, ref_labels: Tensor, query: Tensor, query_labels: Tensor,
                 k: int = 5) -> Tensor:
    """Fraction of queries whose majority label among the k nearest (Euclidean) references
    matches their own label; ties go to the smallest label."""
    k = min(k, len(ref))
    idx = torch.cdist(query, ref).topk(k, largest=False).indices          # [Nq, k]
    votes = ref_labels.to(query.device)[idx]                              # [Nq, k]
    num_classes = int(max(ref_labels.max(), query_labels.max())) + 1
    counts = torch.zeros(len(query), num_classes, device=query.device)
    counts.scatter_add_(1, votes, torch.ones_like(votes, dtype=counts.dtype))
    return (counts.argmax(1) == query_labels.to(query.device)).float().mean()
