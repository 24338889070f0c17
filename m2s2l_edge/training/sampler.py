"""The data order of training: a permutation per epoch that depends on (seed, epoch) alone.

A resumed run, and every process of a torchrun job, therefore visits the same clips in the same order as an
uninterrupted single-process run (``docs/DISTRIBUTED.md``).
"""

from __future__ import annotations

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s data order: a function of (seed, epoch) only, so resuming replays it exactly."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def epoch_order(num_clips: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(num_clips, generator=g).tolist()


def epoch_indices(num_clips: int, seed: int, epoch: int, *, rank: int = 0, world_size: int = 1) -> list[int]:
    """The clips one process visits in epoch ``epoch``, in order: the epoch's permutation (``epoch_order``), and with
    ``world_size`` > 1 every ``world_size``-th clip of it starting at ``rank`` (what DistributedSampler does without
    padding), so the shards of one epoch are disjoint and a resumed run replays them exactly."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size), got rank {rank} of {world_size}")
    return epoch_order(num_clips, seed, epoch)[rank::world_size]
