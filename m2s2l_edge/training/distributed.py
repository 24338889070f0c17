"""Data-parallel training under ``torchrun``: one process per device, DistributedDataParallel, one writer.

``torchrun --nproc-per-node N -m m2s2l_edge train ...`` starts N copies of the command; each finds its place in
the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; :func:`from_env`) and joins one process
group (:func:`process_group`: NCCL for ``--device cuda``, gloo for ``--device cpu``). The semantics
(docs/DISTRIBUTED.md):

* ``--batch`` is the global batch: each process takes ``batch / N`` clips of every step (N must divide it), DDP
  averages the gradients, so N processes take the optimisation steps one process takes with the same ``--batch``
  and the same learning rate.
* The data order depends on (seed, epoch) alone (:func:`m2s2l_edge.training.sampler.epoch_order`): step k of an
  epoch uses the same ``batch`` clips whatever N is, process r taking the r-th contiguous slice of them
  (:class:`ShardSampler`). The union over processes of an epoch is the single-process epoch.
* The two layers that couple the clips of a batch see the whole global batch: BatchNorm normalises with statistics
  over all processes (:class:`GlobalBatchNorm2d` on the CPU, where torch's SyncBatchNorm refuses to run;
  ``torch.nn.SyncBatchNorm`` on CUDA) and the memory bank's update reads every process's queries
  (:class:`SyncMemoryBank`). So N processes reproduce one process up to float rounding (the all-reduce sums in
  another order), not only in expectation.
* Rank 0 alone writes the run folder (checkpoints, history, plots) and prints progress; a checkpoint holds nothing
  that depends on N, so ``--resume`` continues with any number of processes.

Shapes: BatchNorm inputs (B, C, H, W) per process; memory queries (B·h·w, C).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from m2s2l_edge.layers.memory import MemoryBank

logger = logging.getLogger(__name__)

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the run folder and prints; every other rank stays quiet."""
        return self.rank == 0


def from_env(environ: dict[str, str] | None = None) -> DistEnv | None:
    """The torchrun placement from the environment, or None when not started by torchrun (none of ``ENV_VARS``
    set). ValueError when only some are set or a value is not a valid rank."""
    env = os.environ if environ is None else environ
    present = [k for k in ENV_VARS if env.get(k, "") != ""]
    if not present:
        return None
    if len(present) != len(ENV_VARS):
        missing = ", ".join(k for k in ENV_VARS if k not in present)
        raise ValueError(f"distributed launch: {', '.join(present)} set but {missing} missing; start with torchrun "
                         "(it sets RANK, WORLD_SIZE and LOCAL_RANK)")
    try:
        rank, world, local = (int(env[k]) for k in ENV_VARS)
    except ValueError:
        raise ValueError(f"distributed launch: RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                         f"{', '.join(repr(env[k]) for k in ENV_VARS)}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"distributed launch: need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, got RANK {rank}, "
                         f"WORLD_SIZE {world}, LOCAL_RANK {local}")
    return DistEnv(rank, world, local)


def backend_for(device: str) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    if device == "cuda":
        return "nccl"
    if device == "cpu":
        return "gloo"
    raise ValueError(f"--device {device!r} under torchrun: use cuda (each process takes cuda:LOCAL_RANK) or cpu")


def local_batch(global_batch: int, world_size: int) -> int:
    """Clips per process and step; ValueError unless ``world_size`` divides the global batch."""
    if global_batch % world_size:
        lower = global_batch - global_batch % world_size
        hint = f"{lower} or {lower + world_size}" if lower else f"{world_size}"
        raise ValueError(f"--batch {global_batch} is the global batch and must be divisible by the {world_size} "
                         f"processes (e.g. --batch {hint})")
    return global_batch // world_size


def usable_clips(num_clips: int, global_batch: int) -> int:
    """How many clips of an epoch's permutation the steps use: whole global batches only (a single process drops a
    ragged last batch too), so every process takes the same number of steps."""
    if num_clips < global_batch:
        raise ValueError(f"{num_clips} training clips are fewer than one global batch (--batch {global_batch}); "
                         "lower --batch or --stride")
    return num_clips - num_clips % global_batch


class ShardSampler(torch.utils.data.Sampler):
    """DistributedSampler's role with our data order: ``set_epoch(e)`` picks the permutation of (seed, e), and this
    process yields its contiguous ``batch / world_size`` slice of each global batch of it.

    Contiguous slices (not every N-th clip) keep the clips of a global batch in one process's order when gathered in
    rank order, so the memory update sees the queries in the order a single process does.
    """

    def __init__(self, num_clips: int, seed: int, global_batch: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size), got rank {rank} of {world_size}")
        self.num_clips, self.seed = num_clips, seed
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size
        self.local = local_batch(global_batch, world_size)
        self.steps = usable_clips(num_clips, global_batch) // global_batch
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> list[int]:
        from m2s2l_edge.training.sampler import epoch_order

        order = epoch_order(self.num_clips, self.seed, self.epoch)
        starts = (k * self.global_batch + self.rank * self.local for k in range(self.steps))
        return [i for s in starts for i in order[s:s + self.local]]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def __len__(self) -> int:
        return self.steps * self.local


# --- layers that see the global batch ----------------------------------------------------------------------------


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) with a backward pass: the gradient of a sum over processes w.r.t. one process's share is the
    sum over processes of the incoming gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def sum_over_processes(x: torch.Tensor) -> torch.Tensor:
    return _SumOverProcesses.apply(x)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch over all processes (SyncBatchNorm for gloo).

    The mean and the (biased) variance come from two differentiable all-reduces of per-channel sums, so the
    backward pass carries every process's share of the gradient through the statistics, as one process's autograd
    does. Running statistics get the same update on every process (unbiased variance, as BatchNorm2d).
    Without an initialised process group (or with one process) it is BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _active()):
            return super().forward(x)
        self._check_input_dim(x)
        # Every process holds the same share (the global batch split evenly), so the global count is local × N.
        count = x.numel() // x.shape[1] * dist.get_world_size()
        mean = sum_over_processes(x.sum(dim=(0, 2, 3))) / count  # (C,)
        centred = x - mean.view(1, -1, 1, 1)
        # Two passes (mean, then centred squares) rather than E[x²] − E[x]²: no cancellation in float32.
        var = sum_over_processes(centred.square().sum(dim=(0, 2, 3))) / count  # (C,)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                n = float(count)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(n - 1, 1.0)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


class SyncMemoryBank(MemoryBank):
    """MemoryBank whose update reads the queries of every process, gathered in rank order: every process moves
    the items the same way, and as one process with the whole batch would. Reading is unchanged (per clip)."""

    @torch.no_grad()
    def _update(self, q: torch.Tensor, score: torch.Tensor) -> None:
        if _active():
            both = torch.cat([q, score], dim=1).contiguous()  # (Q, C + M); every process has the same Q
            parts = [torch.empty_like(both) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, both)
            gathered = torch.cat(parts, dim=0)
            q, score = gathered[:, :q.shape[1]], gathered[:, q.shape[1]:]
        super()._update(q, score)


def sync_layers(model: nn.Module, device: str) -> int:
    """Replace, in place, every BatchNorm2d by its all-process form (SyncBatchNorm on CUDA, GlobalBatchNorm2d on the
    CPU) and every MemoryBank by SyncMemoryBank. Parameters and buffers are the same tensors (the optimiser keeps
    them; the state dict keeps its keys). Returns how many modules were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = None
            if type(child) is nn.BatchNorm2d:
                new = (nn.SyncBatchNorm if device == "cuda" else GlobalBatchNorm2d)(
                    child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
                new.weight, new.bias = child.weight, child.bias
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
                new.train(child.training)
            elif type(child) is MemoryBank:
                child.__class__ = SyncMemoryBank  # no state of its own: the same module with another update
                replaced += 1
            if new is not None:
                setattr(parent, name, new)
                replaced += 1
    return replaced


# --- the process group -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    """What :func:`m2s2l_edge.training.trainer.train` needs from a process group: the wrap of the model, this process's
    clips, the mean over processes of the logged loss terms, a barrier, and who writes."""

    env: DistEnv
    device: str

    @property
    def is_writer(self) -> bool:
        return self.env.is_writer

    def local_batch(self, global_batch: int) -> int:
        return local_batch(global_batch, self.env.world_size)

    def sampler(self, num_clips: int, seed: int, global_batch: int) -> ShardSampler:
        return ShardSampler(num_clips, seed, global_batch, self.env.rank, self.env.world_size)

    def wrap(self, model: nn.Module) -> nn.Module:
        """Global-batch layers, then DistributedDataParallel (it averages the gradients over processes)."""
        from torch.nn.parallel import DistributedDataParallel

        replaced = sync_layers(model, self.device)
        logger.debug("rank %d: %d layers synchronised over %d processes", self.env.rank, replaced,
                     self.env.world_size)
        ids = [torch.cuda.current_device()] if self.device == "cuda" else None
        # The depth-wise convolutions' gradients come in another memory layout than DDP's buckets: a copy per step,
        # nothing a user can act on, so torch's note about it is not shown.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(model, device_ids=ids, static_graph=True)

    def average(self, loss: float, terms: dict[str, float]) -> tuple[float, dict[str, float]]:
        """The mean over processes of one step's loss and terms: what one process with the global batch logs
        (every process holds an equal share of the batch)."""
        device = torch.device("cuda", torch.cuda.current_device()) if self.device == "cuda" else torch.device("cpu")
        values = torch.tensor([loss, *terms.values()], dtype=torch.float64, device=device)
        dist.all_reduce(values)
        values = (values / self.env.world_size).tolist()
        return values[0], dict(zip(terms, values[1:], strict=True))

    def barrier(self) -> None:
        if self.device == "cuda":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


@contextlib.contextmanager
def process_group(env: DistEnv, device: str) -> Iterator[Distributed]:
    """Join the torchrun job (``env://`` rendezvous) for the body, and leave it on the way out, also on an error or
    Ctrl-C. On CUDA each process takes ``cuda:LOCAL_RANK`` (``--device cuda``; a fixed ``cuda:N`` is refused)."""
    backend = backend_for(device)
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is visible to PyTorch (torch.cuda.is_available() is "
                               "False)")
        if env.local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {env.local_rank} has no GPU: PyTorch sees {torch.cuda.device_count()}; "
                               "start at most that many processes per node")
        torch.cuda.set_device(env.local_rank)
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed")
    dist.init_process_group(backend, init_method="env://", rank=env.rank, world_size=env.world_size)
    logger.debug("rank %d of %d joined the %s process group", env.rank, env.world_size, backend)
    try:
        yield Distributed(env, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def joined_from_env(device: str, global_batch: int, environ: dict[str, str] | None = None):
    """The torchrun job this process belongs to, to join for a ``with`` block (it yields a :class:`Distributed`), or
    a block yielding None outside torchrun. The global batch is checked against the number of processes first, so
    a bad ``--batch`` never reaches the rendezvous."""
    env = from_env(environ)
    if env is None:
        return contextlib.nullcontext()
    local_batch(global_batch, env.world_size)
    return process_group(env, device)
