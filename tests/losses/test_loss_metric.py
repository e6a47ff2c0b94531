"""Embedding losses against brute-force loops over the published formulas."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from losslab.losses import LOSSES

F64 = torch.float64


def batch(n: int = 10, d: int = 4, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randint(0, classes, (n,), generator=g)
    y[-1] = classes  # a class with a single member: no positive for that anchor
    return x, y


def dist(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "cosine":
        return 1 - F.cosine_similarity(a, b, dim=0)
    return (a - b).norm()


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_contrastive_matches_hadsell_formula(distance: str) -> None:
    x, y = batch()
    m = 1.5 if distance == "euclidean" else 0.8
    fn = LOSSES.build("contrastive", margin=m, distance=distance, reduction="none")
    ref = torch.zeros(len(x), dtype=F64)
    for i in range(len(x)):
        for j in range(len(x)):
            if i == j:
                continue
            d = dist(x[i], x[j], distance)
            # Hadsell et al. 2006: Y = 0 similar -> D^2 / 2, Y = 1 dissimilar -> max(0, m - D)^2 / 2
            similar = y[i] == y[j]
            ref[i] += 0.5 * d**2 if similar else 0.5 * torch.clamp(m - d, min=0) ** 2
    torch.testing.assert_close(fn(x, y), ref / (len(x) - 1))


def test_contrastive_pulls_similar_and_pushes_dissimilar() -> None:
    """The label convention: same label is pulled together, different labels pushed apart."""
    fn = LOSSES.build("contrastive", margin=1.0, reduction="sum")

    def grad(x1: float, same: bool) -> float:
        x = torch.tensor([[0.0, 0.0], [x1, 0.0]], requires_grad=True)
        fn(x, torch.tensor([0, 0 if same else 1])).backward()
        return x.grad[1, 0].item()  # descent moves point 1 by -grad

    assert grad(2.0, same=True) > 0  # similar: pulled towards point 0, even far away
    assert grad(0.5, same=False) < 0  # dissimilar within the margin: pushed away
    assert grad(1.5, same=False) == 0  # dissimilar beyond the margin: no force


def brute_triplet(x, y, m, mining, distance="euclidean"):
    n = len(x)
    out = torch.zeros(n, dtype=x.dtype)
    for a in range(n):
        pos = [p for p in range(n) if p != a and y[p] == y[a]]
        neg = [q for q in range(n) if y[q] != y[a]]
        if not pos or not neg:
            continue
        d = {j: dist(x[a], x[j], distance) for j in range(n)}
        if mining == "all":
            vals = [torch.clamp(d[p] - d[q] + m, min=0) for p, q in itertools.product(pos, neg)]
            out[a] = torch.stack(vals).mean()
        elif mining == "hard":
            out[a] = torch.clamp(max(d[p] for p in pos) - min(d[q] for q in neg) + m, min=0)
        elif mining == "semi_hard":
            vals = []
            for p in pos:
                farther = [d[q] for q in neg if d[q] > d[p]]
                dn = min(farther) if farther else max(d[q] for q in neg)
                vals.append(torch.clamp(d[p] - dn + m, min=0))
            out[a] = torch.stack(vals).mean()
    return out


@pytest.mark.parametrize("mining", ["all", "hard", "semi_hard"])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("seed", [0, 1])
def test_triplet_mining_matches_brute_force(mining: str, distance: str, seed: int) -> None:
    x, y = batch(n=11, seed=seed)
    m = 0.5 if distance == "euclidean" else 0.2
    fn = LOSSES.build("triplet", margin=m, mining=mining, distance=distance, reduction="none")
    torch.testing.assert_close(fn(x, y), brute_triplet(x, y, m, mining, distance))
    assert fn(x, y)[-1] == 0  # the singleton class's anchor has no positive


def test_triplet_all_gradient_matches_brute_force() -> None:
    x, y = batch(n=9, seed=2)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    LOSSES.build("triplet", margin=0.7, mining="all", reduction="sum")(a, y).backward()
    brute_triplet(b, y, 0.7, "all").sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_triplet_equals_torch_for_explicit_triplets() -> None:
    """Labels [0, 0, 1]: anchors 0 and 1 each have exactly one triplet."""
    x, _ = batch(n=3, seed=4)
    y = torch.tensor([0, 0, 1])
    ours = LOSSES.build("triplet", margin=1.0, reduction="none")(x, y)
    ref = F.triplet_margin_loss(x[[0, 1]], x[[1, 0]], x[[2, 2]], margin=1.0, eps=0.0,
                                reduction="none")
    torch.testing.assert_close(ours[:2], ref)
    assert ours[2] == 0


def test_triplet_random_mining_picks_valid_triplets() -> None:
    x, y = batch(n=12, seed=5)
    fn = LOSSES.build("triplet", margin=0.5, mining="random", reduction="none")
    torch.manual_seed(0)
    out = fn(x, y)
    for a in range(len(x)):
        pos = [p for p in range(len(x)) if p != a and y[p] == y[a]]
        neg = [q for q in range(len(x)) if y[q] != y[a]]
        if not pos or not neg:
            assert out[a] == 0
            continue
        candidates = [torch.clamp(dist(x[a], x[p], "euclidean") - dist(x[a], x[q], "euclidean")
                                  + 0.5, min=0) for p in pos for q in neg]
        assert min(abs(out[a] - c) for c in candidates) < 1e-9
    torch.manual_seed(0)
    torch.testing.assert_close(fn(x, y), out)  # reproducible under the global seed


@pytest.mark.parametrize(
    ("name", "params"),
    [("contrastive", {}), ("contrastive", {"distance": "cosine"})]
    + [("triplet", {"mining": m}) for m in ("all", "hard", "semi_hard", "random")],
)
def test_finite_gradients_for_coincident_embeddings(name: str, params: dict) -> None:
    """Identical embeddings (distance 0) must not give NaN: eps sits inside the sqrt."""
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    loss = LOSSES.build(name, reduction="sum", **params)(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_single_sample_and_single_class_batches() -> None:
    for name in ("contrastive", "triplet"):
        fn = LOSSES.build(name, reduction="none")
        assert fn(torch.randn(1, 3), torch.tensor([0])).tolist() == [0.0]
    one_class = LOSSES.build("triplet", reduction="none")(torch.randn(4, 3), torch.zeros(4))
    assert one_class.tolist() == [0.0] * 4


def test_pairwise_euclidean_function() -> None:
    """Hand-written backward == autograd through the expansion, also at coincident points."""
    from losslab.losses.functional import pairwise_euclidean, pairwise_euclidean_composite

    x = torch.randn(7, 3, dtype=F64)
    x[3] = x[1]  # coincident pair: on the eps floor, gradient 0
    torch.testing.assert_close(pairwise_euclidean(x), torch.cdist(x, x), atol=1e-6, rtol=0)
    g = torch.randn(7, 7, dtype=F64)  # an upstream gradient that is not symmetric
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    (pairwise_euclidean(a) * g).sum().backward()
    (pairwise_euclidean_composite(b) * g).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
    y = torch.randn(5, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(pairwise_euclidean, (y,))
    assert torch.autograd.gradgradcheck(pairwise_euclidean, (y,), fast_mode=True)
