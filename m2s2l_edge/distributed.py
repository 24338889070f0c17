"""Data-parallel training under ``torchrun``: DistributedDataParallel with NCCL on GPUs and gloo on CPUs.

``torchrun --nproc-per-node N -m m2s2l_edge train ...`` starts N copies of the command; each finds its rank in the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` / ``MASTER_PORT``). Without
those variables everything here is a no-op and training runs in one process as before.

Semantics, chosen so that N processes compute what one process computes with the same ``--batch``:

- ``--batch`` is the **global** batch: clips per optimisation step over all processes. Each process takes
  ``batch / N`` of them (``batch`` must divide by N), so the learning rate needs no rescaling when N changes.
- Every process draws the same epoch order (a function of the run seed and the epoch alone) and takes every N-th
  clip of it from its rank on (``train.epoch_indices``, as DistributedSampler does), cut to the one-process run's
  full batches: local batch ``k`` of all processes together holds exactly the clips of global batch ``k``.
- DDP averages the gradients of the per-process mean losses, which equals the gradient of the global mean loss.
  BatchNorm is made global too: on CUDA through ``torch.nn.SyncBatchNorm``; on the CPU (where SyncBatchNorm does
  not run) through :class:`GlobalBatchNorm2d`, which all-reduces the batch sums differentiably. The memory bank's
  update gathers the queries of all processes (``m2s2l_edge.layers.memory``). Sums over a batch do not depend on
  the order of its clips, so each step equals the one-process step up to rounding. The epoch losses (history, log)
  are averaged over processes, so they are the global batch's; the per-step progress shows rank 0's share.
- Rank 0 alone writes checkpoints, history and plots; the checkpoint holds the plain model (no DDP wrapper), so a
  run resumes with any number of processes, one included.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch(self, batch_size: int) -> int:
        if batch_size % self.world_size:
            raise ValueError(f"--batch {batch_size} is the global batch and must divide by the {self.world_size} "
                             f"processes (each takes batch / processes clips)")
        return batch_size // self.world_size

    def full_batches(self, indices: list[int], num_clips: int, batch_size: int) -> list[int]:
        """This process's share (``train.epoch_indices`` with this rank: every world_size-th clip of the epoch
        order) cut to the global batches the one-process loader runs: its first ``num_clips // batch_size`` full
        batches (it drops a ragged tail), so every process takes the same number of steps. Local batch k of the
        processes together holds exactly global batch k's clips. With fewer clips than one batch, an even split."""
        if not self.enabled:
            return indices
        steps = num_clips // batch_size
        keep = steps * self.local_batch(batch_size) if steps else num_clips // self.world_size
        if keep == 0:
            raise ValueError(f"{num_clips} training clips cannot be split over {self.world_size} processes")
        return indices[:keep]

    def wrap(self, model):
        """The module to run forward and backward through: ``model`` itself in one process, else ``model`` with global
        BatchNorm inside DDP. The returned wrapper shares ``model``'s parameters, so saving ``model`` saves it."""
        if not self.enabled:
            return model
        import torch
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        if device.type == "cuda":
            model_bn = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            model_bn = convert_global_batchnorm(model)
        if model_bn is not model:
            raise RuntimeError("BatchNorm conversion replaced the root module; wrap a container model")
        # Buffers (BatchNorm statistics, memory items) are updated identically on every rank from global
        # quantities, so DDP need not broadcast them before each forward.
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       broadcast_buffers=False)

    def average(self, value: float, terms: dict[str, float]) -> tuple[float, dict[str, float]]:
        """The loss and its terms averaged over processes (equal local batches: the global batch's mean)."""
        if not self.enabled:
            return value, terms
        import torch
        import torch.distributed as dist

        keys = sorted(terms)
        t = torch.tensor([value, *(terms[k] for k in keys)], dtype=torch.float64)
        if self.backend == "nccl":
            t = t.cuda(self.local_rank)
        dist.all_reduce(t)
        t = (t / self.world_size).cpu().tolist()
        return t[0], dict(zip(keys, t[1:], strict=True))

    def average_summary(self, summary):
        """An epoch summary (``train.EpochSummary``) with its loss and terms averaged over processes."""
        if not self.enabled:
            return summary
        import dataclasses

        loss, terms = self.average(summary.loss, summary.terms)
        return dataclasses.replace(summary, loss=loss, terms=terms)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def setup(device: str) -> DistContext:
    """Join the process group torchrun describes in the environment (NCCL for ``cuda``, gloo otherwise), once per
    process; a one-process context when ``WORLD_SIZE`` is unset or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    logger.info("data-parallel training: rank %d of %d (%s)", rank, world, backend)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def rank_from_env() -> int:
    """This process's rank under torchrun (0 outside it), for code that must not write twice (plots, logs)."""
    return int(os.environ.get("RANK", "0"))


@functools.cache
def _global_batchnorm_class():
    import torch
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_reduce

    class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
        """BatchNorm2d whose training statistics cover the batch of all processes (CPU / gloo).

        Forward all-reduces the per-channel sum, sum of squares and count with a differentiable all-reduce, so the
        backward pass also carries every process's share of the statistics' gradient; outside training, or in one
        process, it is plain BatchNorm2d.
        """

        def forward(self, x):
            if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
                return super().forward(x)
            c = x.shape[1]
            count = torch.full((1,), x.numel() / c, dtype=torch.float64)
            stats = torch.cat([x.sum((0, 2, 3)).double(), (x * x).sum((0, 2, 3)).double(), count])
            stats = all_reduce(stats)
            n = stats[-1]
            mean = stats[:c] / n
            var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
            inv = torch.rsqrt(var + self.eps).to(x.dtype)
            y = (x - mean.to(x.dtype)[None, :, None, None]) * inv[None, :, None, None]
            if self.affine:
                y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
            return y

    return GlobalBatchNorm2d


def convert_global_batchnorm(module):
    """Turn every BatchNorm2d under ``module`` into a GlobalBatchNorm2d in place (parameters and buffers kept, so
    the state dict is unchanged); returns ``module``."""
    import torch

    cls = _global_batchnorm_class()
    for child in list(module.children()):
        if type(child) is torch.nn.BatchNorm2d:
            child.__class__ = cls
        else:
            convert_global_batchnorm(child)
    return module
