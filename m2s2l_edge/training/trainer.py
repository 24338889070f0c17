"""Training: Adam with a step schedule (paper), atomic per-epoch checkpoints and exact resumption.

Resumption contract: every completed epoch writes ``<out>/last.pt`` atomically (model, optimiser, scheduler,
GradScaler, epoch, step, RNG states, configs, data set). A run killed at any point (even ``kill -9`` in the middle
of a write) therefore loses at most the epoch in progress, and ``resume=True`` restarts at the saved epoch + 1 in the
same state. The data order of epoch ``e`` is a permutation drawn from a generator seeded by ``(seed, e)`` alone, so
a resumed run visits the same clips in the same order as an uninterrupted one; the global RNG states (used by
parameter initialisation and nothing else in the loop today) are restored as well so that stays true if a
stochastic layer is added.

The last checkpoint is the result: nothing here looks at test labels (docs/DESIGN.md §6).

Shapes: a batch from :class:`~m2s2l_edge.data.ClipDataset` is (B, T+1, 3, H, W) in [-1, 1]; ``[:, :T]`` is the
model input, ``[:, T]`` the target frame.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from m2s2l_edge.artifacts.checkpoint import read_checkpoint, save_checkpoint
from m2s2l_edge.config import LossConfig, ModelConfig, TrainConfig
from m2s2l_edge.io import atomic_write_text
from m2s2l_edge.training.sampler import epoch_indices

if TYPE_CHECKING:
    from m2s2l_edge.training.distributed import Distributed

logger = logging.getLogger(__name__)

LAST = "last.pt"
HISTORY = "history.json"
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class DataConfig:
    """Where the training videos are: ``discover(root, dataset, "train", name=name)``; clips start every ``stride``
    frames."""

    root: str
    dataset: str
    name: str | None = None
    stride: int = 1

    def __post_init__(self) -> None:
        from m2s2l_edge.data.layouts import check_dataset

        check_dataset(self.dataset)
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")


@dataclass(frozen=True)
class RunConfig:
    """How and where one training run executes (none of this changes the result except ``seed``)."""

    out_dir: str
    device: str = "cpu"
    amp: bool | None = None  # None: on for CUDA (autocast fp16 + GradScaler), off on the CPU
    workers: int = 0
    seed: int = 0
    resume: bool = False
    overwrite: bool = False  # start afresh even if out_dir holds a checkpoint
    keep_epochs: bool = False  # also keep <out>/epoch_NNN.pt for every epoch

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"unknown device {self.device!r}; valid: {', '.join(DEVICES)}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: resume continues out_dir/last.pt, "
                             "overwrite replaces it")

    @property
    def use_amp(self) -> bool:
        if self.amp and self.device != "cuda":
            raise ValueError("mixed precision (amp) needs --device cuda; it is off on the CPU")
        return self.device == "cuda" if self.amp is None else self.amp


@dataclass(frozen=True)
class EpochSummary:
    epoch: int  # 1-based
    step: int  # optimiser steps so far
    loss: float  # mean total loss over the epoch
    terms: dict[str, float]  # mean of each loss term
    lr: float  # learning rate used during the epoch
    seconds: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    checkpoint: Path
    epochs: int
    step: int
    history: list[EpochSummary] = field(default_factory=list)
    resumed_from: int | None = None  # epoch the run continued after, if resumed
    seconds: float = 0.0


class TrainCallbacks:
    """Progress hooks (the CLI draws a progress bar with them); the defaults do nothing."""

    def on_start(self, *, total_epochs: int, start_epoch: int, steps_per_epoch: int, clips: int) -> None:
        pass

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        pass

    def on_step(self, epoch: int, step_in_epoch: int, loss: float, terms: dict[str, float]) -> None:
        pass

    def on_epoch_end(self, summary: EpochSummary, checkpoint: Path) -> None:
        pass


# --- configuration <-> checkpoint --------------------------------------------------------------------------------


def train_config_to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)  # the nested LossConfig becomes a dict


def train_config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    loss = LossConfig(**d.pop("loss", {}))
    return TrainConfig(**d, loss=loss)


def check_train_config(cfg: TrainConfig) -> None:
    if cfg.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {cfg.batch_size}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"learning rate must be a positive number, got {cfg.lr}")
    if cfg.lr_step_epochs < 1:
        raise ValueError(f"lr step must be >= 1 epoch, got {cfg.lr_step_epochs}")
    if not 0 < cfg.lr_gamma <= 1:
        raise ValueError(f"lr gamma must lie in (0, 1], got {cfg.lr_gamma}")


def _rng_state() -> dict:
    # Plain lists and tensors only: checkpoints are read back with torch.load(weights_only=True).
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _diff(label: str, requested: dict, stored: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{label}.{k}: checkpoint {stored.get(k)!r}, requested {requested.get(k)!r}"
        for k in sorted(set(requested) | set(stored))
        if k not in ignore and requested.get(k) != stored.get(k)
    ]


# --- the loop ----------------------------------------------------------------------------------------------------


def _make_loader(dataset, order: list[int], batch_size: int, workers: int, pin: bool):
    from torch.utils.data import DataLoader

    # A batch of one would make BatchNorm's training statistics degenerate; drop a ragged tail when we can.
    drop_last = len(order) > batch_size
    return DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers, drop_last=drop_last,
                      pin_memory=pin, persistent_workers=False)


def _model_for_training(model_cfg: ModelConfig, device: str) -> ModelConfig:
    """The scan backend to train with: ``auto`` on CUDA may pick our forward-only kernel, so ask for one with a
    backward pass instead (the choice is stored in the checkpoint; evaluation picks its own backend)."""
    if device == "cuda" and model_cfg.scan_backend == "auto":
        from m2s2l_edge.ops.kernels import differentiable_backend

        return model_cfg.replace(scan_backend=differentiable_backend("cuda"))
    return model_cfg


@dataclass
class TrainState:
    """What one run carries from epoch to epoch, and what ``<out>/last.pt`` holds.

    ``model`` is the module whose parameters are trained and saved; ``net`` is what a step calls: the model itself,
    or a wrapper around it (``build_state(..., wrap=...)``, e.g. DistributedDataParallel) that shares its
    parameters. ``epoch`` counts completed epochs, ``step`` optimiser steps. ``average``, when set, turns one
    process's step loss and terms into the mean over all processes (a distributed run logs the global batch's).
    """

    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    use_amp: bool
    epoch: int = 0
    step: int = 0
    history: list[EpochSummary] = field(default_factory=list)
    resumed_from: int | None = None  # epoch the run continued after, if resumed
    average: Callable[[float, dict[str, float]], tuple[float, dict[str, float]]] | None = None


def check_resume(model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig,
                 run_cfg: RunConfig, arch: str = "m2s2l") -> dict | None:
    """The checkpoint to continue (``run_cfg.resume``), or None for a fresh run; checked before any output exists.

    Raises FileNotFoundError when there is nothing to resume, ValueError when the checkpoint does not fit the
    request or is already finished, or when a fresh run would replace an existing one without ``overwrite``.
    """
    last = Path(run_cfg.out_dir) / LAST
    if not run_cfg.resume:
        if last.exists() and not run_cfg.overwrite:
            raise ValueError(f"{last} already exists; pass --resume to continue that run or --overwrite to replace it")
        return None
    if not last.is_file():
        raise FileNotFoundError(f"nothing to resume: {last} does not exist (run without --resume to start)")
    state = read_checkpoint(last)
    extra = state.get("extra", {})
    stored_model = ModelConfig.from_dict(state["config"])
    stored_train = train_config_from_dict(extra.get("train_config", {}))
    problems = _diff("model", _model_for_training(model_cfg, run_cfg.device).to_dict(), stored_model.to_dict(),
                     ignore=("scan_backend",))
    problems += _diff("train", train_config_to_dict(train_cfg), train_config_to_dict(stored_train),
                      ignore=("epochs",))
    problems += _diff("data", {"dataset": data_cfg.dataset, "seed": run_cfg.seed, "arch": arch},
                      {"dataset": extra.get("dataset"), "seed": extra.get("seed"), "arch": state.get("arch", "m2s2l")})
    if problems:
        raise ValueError(f"cannot resume {last}: the request differs from the checkpoint ({'; '.join(problems)})")
    if state["epoch"] >= train_cfg.epochs:
        raise ValueError(f"{last} already finished {state['epoch']} of {train_cfg.epochs} epochs; "
                         f"pass a larger --epochs to train further")
    return state


def build_state(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    run_cfg: RunConfig,
    resume: dict | None = None,
    *,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    arch: str = "m2s2l",
) -> TrainState:
    """Model, Adam, the step schedule and the GradScaler, seeded by ``run_cfg.seed``, restored from ``resume`` (a
    checkpoint from ``check_resume``) when given, on ``run_cfg.device``.

    ``wrap`` turns the model, once on its device, into what the steps call (e.g. ``lambda m:
    DistributedDataParallel(m, device_ids=[rank])``); the optimiser holds the model's own parameters either way.
    ``arch``: another architecture of ``m2s2l_edge.models.registry.TRAINABLE`` (a peer, sized by ``model_cfg``),
    trained with its own objective (its ``loss`` method) instead of M²S²L's.
    """
    from m2s2l_edge.models.registry import create_trainable

    device = torch.device(run_cfg.device)
    use_amp = run_cfg.use_amp
    seed_everything(run_cfg.seed)
    model = create_trainable(arch, _model_for_training(model_cfg, run_cfg.device))
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    # Paper: the learning rate is halved every 20 epochs (StepLR, stepped once per epoch).
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=train_cfg.lr_step_epochs,
                                                gamma=train_cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    state = TrainState(model, model, optimizer, scheduler, scaler, device, use_amp)
    if resume is not None:
        model.load_state_dict(resume["model"])
        model.to(device)  # before the optimiser state: Adam's load_state_dict moves its moments to the params' device
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        extra = resume["extra"]
        if extra.get("scaler"):
            scaler.load_state_dict(extra["scaler"])
        state.epoch, state.step = int(resume["epoch"]), int(resume["step"])
        state.history = [EpochSummary(**h) for h in extra.get("history", [])]
        state.resumed_from = state.epoch
        _set_rng_state(extra["rng"])
        logger.info("resuming %s after epoch %d (step %d)", Path(run_cfg.out_dir) / LAST, state.epoch, state.step)
    model.to(device)
    if wrap is not None:
        state.net = wrap(model)
    return state


def train_epoch(
    state: TrainState,
    loader,
    loss_cfg: LossConfig,
    epoch: int,
    callbacks: TrainCallbacks,
    *,
    max_steps: int | None = None,
) -> EpochSummary | None:
    """One epoch over ``loader`` (batches (B, T+1, 3, H, W)), then one step of the learning-rate schedule.

    ``max_steps``: stop after that many optimiser steps, mid-epoch, and return None (the epoch is not complete).
    Raises RuntimeError when the loss becomes NaN or infinite.
    """
    from m2s2l_edge.models.losses import total_loss

    device = state.device
    state.net.train()
    tic = time.perf_counter()
    lr = state.optimizer.param_groups[0]["lr"]
    callbacks.on_epoch_start(epoch, len(loader))
    sums: dict[str, float] = {}
    total, n = 0.0, 0
    for i, batch in enumerate(loader):
        batch = batch.to(device, non_blocking=True)  # (B, T+1, 3, H, W)
        clip, target = batch[:, :-1], batch[:, -1]  # (B, T, 3, H, W), (B, 3, H, W)
        with torch.autocast(device.type, dtype=torch.float16, enabled=state.use_amp):
            outputs = state.net(clip)
        # The losses run in float32 whatever autocast produced (PSNR-scale errors are small).
        outputs = {k: v.float() for k, v in outputs.items()}
        objective = getattr(state.model, "loss", None)  # a peer brings its own objective
        loss, terms = (objective or total_loss)(outputs, clip, target, loss_cfg)
        value = float(loss.detach())
        if state.average is not None:  # every process then sees the same value, and stops together on a NaN
            value, terms = state.average(value, terms)
        if not math.isfinite(value):
            raise RuntimeError(f"the loss became {value} at epoch {epoch}, step {state.step + 1} "
                               f"(terms {terms}); lower --lr or check the data")
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.step += 1
        logger.debug("epoch %d step %d: loss %r", epoch, state.step, value)
        total += value
        n += 1
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v
        callbacks.on_step(epoch, i + 1, value, terms)
        if max_steps is not None and n >= max_steps:
            return None
    state.scheduler.step()
    state.epoch = epoch
    summary = EpochSummary(epoch, state.step, total / max(n, 1), {k: v / max(n, 1) for k, v in sums.items()}, lr,
                           time.perf_counter() - tic)
    state.history.append(summary)
    return summary


def save_state(state: TrainState, out_dir: str | Path, extra_static: dict, *, keep_epochs: bool = False) -> Path:
    """Write ``<out>/last.pt`` (and ``epoch_NNN.pt`` with ``keep_epochs``) and ``history.json``, each atomically.

    Call it from one process only when several train one model (rank 0 of a distributed run). Returns last.pt.
    """
    out = Path(out_dir)
    last = out / LAST
    extra = {**extra_static, "history": [h.as_dict() for h in state.history], "rng": _rng_state(),
             "scaler": state.scaler.state_dict() if state.use_amp else {}}
    save_checkpoint(last, state.model, optimizer=state.optimizer, scheduler=state.scheduler, epoch=state.epoch,
                    step=state.step, extra=extra)
    if keep_epochs:
        # A copy of a complete file, so it is as safe as last.pt itself.
        from m2s2l_edge.io import atomic_write

        atomic_write(out / f"epoch_{state.epoch:03d}.pt", lambda p: shutil.copyfile(last, p))
    atomic_write_text(out / HISTORY, json.dumps([h.as_dict() for h in state.history], indent=2))
    return last


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data_cfg: DataConfig,
    run_cfg: RunConfig,
    callbacks: TrainCallbacks | None = None,
    *,
    stop_after_steps: int | None = None,
    arch: str = "m2s2l",
    distributed: Distributed | None = None,
) -> TrainResult:
    """Train M²S²L on the normal training videos of ``data_cfg`` and leave the result in ``<out>/last.pt``.

    The steps, each usable on its own: ``check_resume`` (the request against an existing run), ``build_state``
    (model, optimiser, schedule, scaler, restored), ``train_epoch`` over ``epoch_indices``'s clips, ``save_state``.

    ``stop_after_steps``: stop (without saving) once this many optimiser steps have run in this call; a stand-in
    for an interruption in tests and quick experiments. ``arch``: see ``build_state``.

    ``distributed``: this process's share of a torchrun job (:func:`m2s2l_edge.training.distributed.process_group`): the
    model is wrapped in DistributedDataParallel, ``train_cfg.batch_size`` is the global batch, each process takes
    its slice of every step, and only the writer (rank 0) creates ``out_dir`` and writes to it.

    Raises:
        ValueError / FileNotFoundError: bad data, a checkpoint that does not fit the request, an output folder that
            already holds a run (pass resume or overwrite).
        RuntimeError: CUDA requested but unavailable; the loss became NaN or infinite.
    """
    from m2s2l_edge.data import ClipDataset, discover

    cb = callbacks or TrainCallbacks()
    check_train_config(train_cfg)
    batch = train_cfg.batch_size if distributed is None else distributed.local_batch(train_cfg.batch_size)
    writer = distributed is None or distributed.is_writer
    use_amp = run_cfg.use_amp
    if run_cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is visible to PyTorch (torch.cuda.is_available() is False)")
    out = Path(run_cfg.out_dir)
    # Everything that can be wrong with the request is checked before any output is written.
    resume = check_resume(model_cfg, train_cfg, data_cfg, run_cfg, arch)

    videos = discover(data_cfg.root, data_cfg.dataset, "train", name=data_cfg.name)
    dataset = ClipDataset(videos, clip_len=model_cfg.clip_len, image_size=model_cfg.image_size,
                          stride=data_cfg.stride)
    sampler = None if distributed is None else distributed.sampler(len(dataset), run_cfg.seed, train_cfg.batch_size)
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    state = build_state(model_cfg, train_cfg, run_cfg, resume, wrap=None if distributed is None else distributed.wrap,
                        arch=arch)
    state.average = None if distributed is None else distributed.average

    from m2s2l_edge.scoring.terms import normal_change

    extra_static = {
        "train_config": train_config_to_dict(train_cfg),
        # The reference of the score's motion term (ScoreConfig.motion_weight): how much normal footage moves.
        "normal_change": normal_change(dataset) if writer else None,  # only the writer saves checkpoints
        "dataset": data_cfg.dataset,
        "data_root": str(data_cfg.root),
        "data_name": data_cfg.name,
        "stride": data_cfg.stride,
        "seed": run_cfg.seed,
        "amp": use_amp,
        "torch": str(torch.__version__),
    }
    steps_per_epoch = len(_make_loader(dataset, list(range(len(dataset))), train_cfg.batch_size, 0, False))
    cb.on_start(total_epochs=train_cfg.epochs, start_epoch=state.epoch, steps_per_epoch=steps_per_epoch,
                clips=len(dataset))
    what = (model_cfg.name, _switches(model_cfg)) if arch == "m2s2l" else (arch, "peer predictor")
    logger.info("training %s (%s) on %d clips from %d videos: %d epochs × %d steps, batch %d, device %s%s", *what,
                len(dataset), len(videos), train_cfg.epochs, steps_per_epoch, train_cfg.batch_size, run_cfg.device,
                ", amp" if use_amp else "")

    tic_run = time.perf_counter()
    first_step = state.step
    for epoch in range(state.epoch + 1, train_cfg.epochs + 1):
        if sampler is None:
            order = epoch_indices(len(dataset), run_cfg.seed, epoch)
        else:
            sampler.set_epoch(epoch)
            order = sampler
        loader = _make_loader(dataset, order, batch, run_cfg.workers, pin=state.device.type == "cuda")
        budget = None if stop_after_steps is None else stop_after_steps - (state.step - first_step)
        summary = train_epoch(state, loader, train_cfg.loss, epoch, cb, max_steps=budget)
        if summary is None:
            logger.info("stopped after %d steps (stop_after_steps) in epoch %d", state.step - first_step, epoch)
            return TrainResult(out / LAST, epoch - 1, state.step, state.history, state.resumed_from,
                               time.perf_counter() - tic_run)
        if writer and run_cfg.overwrite and state.resumed_from is None and epoch == 1:
            remove_earlier_run(out)  # only now: until this run has an epoch to show, the earlier one stays whole
        last = save_state(state, out, extra_static, keep_epochs=run_cfg.keep_epochs) if writer else out / LAST
        if distributed is not None:  # no process runs ahead of a checkpoint that is still being written
            distributed.barrier()
        logger.info("epoch %d/%d: loss %.4f (%s), lr %.2e, %.1f s", epoch, train_cfg.epochs, summary.loss,
                    ", ".join(f"{k} {v:.4f}" for k, v in summary.terms.items()), summary.lr, summary.seconds)
        cb.on_epoch_end(summary, last)
    return TrainResult(out / LAST, train_cfg.epochs, state.step, state.history, state.resumed_from,
                       time.perf_counter() - tic_run)


def _switches(cfg: ModelConfig) -> str:
    on = [name for name, flag in (("multi-scale spatial", cfg.multi_scale_spatial),
                                  ("multi-scale temporal", cfg.multi_scale_temporal),
                                  ("decomposition", cfg.decompose)) if flag]
    return ", ".join(on) if on else "baseline"


def remove_earlier_run(out: Path) -> list[Path]:
    """With ``overwrite``: remove the files of the run that was in ``out`` and that the new run does not replace
    itself (per-epoch checkpoints, the loss plot), so the folder never mixes two runs. last.pt and history.json are
    replaced atomically by the new run's."""
    epochs = [p for p in sorted(out.glob("epoch_*.pt")) if p.stem[len("epoch_"):].isdigit()]
    removed = [*epochs, *(p for p in (out / "loss.png",) if p.exists())]
    for path in removed:
        path.unlink()
    return removed


def load_history(out_dir: str | Path) -> list[dict]:
    """The per-epoch summaries a run wrote (``<out>/history.json``); empty when there are none yet."""
    path = Path(out_dir) / HISTORY
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
