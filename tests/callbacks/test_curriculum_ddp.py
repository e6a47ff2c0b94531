"""DDP: every rank computes the same thresholds, tau and EMA table from the all-gathered batch,
equal to one process on the same global batch (2 gloo processes on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from losslab.callbacks.curriculum_weights import CurriculumWeights as Curriculum

WORLD, PER_RANK, N_SAMPLES, STEPS = 2, 8, 24, 3
CASES = {
    "pacing": {"start_fraction": 0.3},
    "anti": {"start_fraction": 0.6},
    "self_paced_hard": {"init_fraction": 0.4},
    "self_paced_linear": {"init_fraction": 0.7},
    "superloss": {"superloss_lam": 0.5},
}


def global_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """STEPS global batches (indices, losses) of WORLD * PER_RANK samples, the same everywhere."""
    g = torch.Generator().manual_seed(0)
    return [(torch.randperm(N_SAMPLES, generator=g)[:WORLD * PER_RANK],
             3 * torch.rand(WORLD * PER_RANK, generator=g)) for _ in range(STEPS)]


def run_steps(rank: int) -> dict[str, dict[str, torch.Tensor]]:
    """Feed this rank's share (all of it in one process) of each global batch to a callback."""
    part = slice(rank * PER_RANK, (rank + 1) * PER_RANK) if dist.is_initialized() else slice(None)
    out = {}
    for strategy, kw in CASES.items():
        c = Curriculum(strategy=strategy, difficulty="ema", ema_decay=0.5, **kw)
        c.num_samples, c.progress = N_SAMPLES, 0.1
        for idx, loss in global_batches():
            w = c.weights(idx[part], loss[part])
        out[strategy] = {"threshold": c.last["threshold"].clone(), "weights": w.clone(),
                         "ema": c.ema.clone()}
    return out


def _worker(rank: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=WORLD)
    try:
        torch.save(run_steps(rank), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_thresholds_agree_across_ranks_and_with_one_process(tmp_path: Path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    single = run_steps(0)
    for strategy in CASES:
        ref = single[strategy]
        for res in ranks:
            assert torch.equal(res[strategy]["threshold"], ranks[0][strategy]["threshold"])
            assert torch.allclose(res[strategy]["threshold"], ref["threshold"]), strategy
            assert torch.allclose(res[strategy]["ema"], ref["ema"], equal_nan=True), strategy
        both = torch.cat([res[strategy]["weights"] for res in ranks])
        assert torch.allclose(both, ref["weights"], atol=1e-6), strategy
