"""Training: Adam with a step schedule (paper), atomic per-epoch checkpoints and exact resumption.

Resumption contract: every completed epoch writes ``<out>/last.pt`` atomically (model, optimiser, scheduler,
GradScaler, epoch, step, RNG states, configs, data set). A run killed at any point (even ``kill -9`` in the middle
of a write) therefore loses at most the epoch in progress, and ``resume=True`` restarts at the saved epoch + 1 in the
same state. The data order of epoch ``e`` is a permutation drawn from a generator seeded by ``(seed, e)`` alone, so
a resumed run visits the same clips in the same order as an uninterrupted one; the global RNG states (used by
parameter initialisation and nothing else in the loop today) are restored as well so that stays true if a
stochastic layer is added.

The last checkpoint is the result: nothing here looks at test labels (DESIGN.md §4).

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from m2s2l_edge import distributed
from m2s2l_edge.checkpoint import read_checkpoint, save_checkpoint
from m2s2l_edge.config import LossConfig, ModelConfig, TrainConfig
from m2s2l_edge.io import atomic_write_text

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


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s data order: a function of (seed, epoch) only, so resuming replays it exactly."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def epoch_order(num_clips: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(num_clips, generator=g).tolist()


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
        from m2s2l_edge.ops.dispatch import differentiable_backend

        return model_cfg.replace(scan_backend=differentiable_backend("cuda"))
    return model_cfg


def train(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    data_cfg: DataConfig,
    run_cfg: RunConfig,
    callbacks: TrainCallbacks | None = None,
    *,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train M²S²L on the normal training videos of ``data_cfg`` and leave the result in ``<out>/last.pt``.

    ``stop_after_steps``: stop (without saving) once this many optimiser steps have run in this call; a stand-in
    for an interruption in tests and quick experiments.

    Raises:
        ValueError / FileNotFoundError: bad data, a checkpoint that does not fit the request, an output folder that
            already holds a run (pass resume or overwrite).
        RuntimeError: CUDA requested but unavailable; the loss became NaN or infinite.
    """
    from m2s2l_edge.data import ClipDataset, discover
    from m2s2l_edge.losses import total_loss
    from m2s2l_edge.models import M2S2L

    cb = callbacks or TrainCallbacks()
    check_train_config(train_cfg)
    use_amp = run_cfg.use_amp
    if run_cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is visible to PyTorch (torch.cuda.is_available() is False)")
    out = Path(run_cfg.out_dir)
    last = out / LAST

    # Everything that can be wrong with the request is checked before any output is written.
    state = None
    if run_cfg.resume:
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
        problems += _diff("data", {"dataset": data_cfg.dataset, "seed": run_cfg.seed},
                          {"dataset": extra.get("dataset"), "seed": extra.get("seed")})
        if problems:
            raise ValueError(f"cannot resume {last}: the request differs from the checkpoint ({'; '.join(problems)})")
        if state["epoch"] >= train_cfg.epochs:
            raise ValueError(f"{last} already finished {state['epoch']} of {train_cfg.epochs} epochs; "
                             f"pass a larger --epochs to train further")
    elif last.exists() and not run_cfg.overwrite:
        raise ValueError(f"{last} already exists; pass --resume to continue that run or --overwrite to replace it")

    ctx = distributed.setup(run_cfg.device)  # one process unless started by torchrun (m2s2l_edge/distributed.py)
    device = torch.device(ctx.device(run_cfg.device))
    cb = cb if ctx.is_main else TrainCallbacks()
    videos = discover(data_cfg.root, data_cfg.dataset, "train", name=data_cfg.name)
    dataset = ClipDataset(videos, clip_len=model_cfg.clip_len, image_size=model_cfg.image_size,
                          stride=data_cfg.stride)
    out.mkdir(parents=True, exist_ok=True)

    seed_everything(run_cfg.seed)
    model = M2S2L(_model_for_training(model_cfg, run_cfg.device))
    optimizer = torch.optim.Adam(model.parameters(), lr=train_cfg.lr)
    # Paper: the learning rate is halved every 20 epochs (StepLR, stepped once per epoch).
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=train_cfg.lr_step_epochs,
                                                gamma=train_cfg.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch, step, history = 0, 0, []
    if state is not None:
        model.load_state_dict(state["model"])
        model.to(device)  # before the optimiser state: Adam's load_state_dict moves its moments to the params' device
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        extra = state["extra"]
        if extra.get("scaler"):
            scaler.load_state_dict(extra["scaler"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history = [EpochSummary(**h) for h in extra.get("history", [])]
        _set_rng_state(extra["rng"])
        logger.info("resuming %s after epoch %d (step %d)", last, start_epoch, step)
    model.to(device)
    net = ctx.wrap(model)

    extra_static = {
        "train_config": train_config_to_dict(train_cfg),
        "dataset": data_cfg.dataset,
        "data_root": str(data_cfg.root),
        "data_name": data_cfg.name,
        "stride": data_cfg.stride,
        "seed": run_cfg.seed,
        "amp": use_amp,
        "torch": str(torch.__version__),
    }
    steps_per_epoch = len(_make_loader(dataset, list(range(len(dataset))), train_cfg.batch_size, 0, False))
    cb.on_start(total_epochs=train_cfg.epochs, start_epoch=start_epoch, steps_per_epoch=steps_per_epoch,
                clips=len(dataset))
    logger.info("training %s (%s) on %d clips from %d videos: %d epochs × %d steps, batch %d, device %s%s",
                model_cfg.name, _switches(model_cfg), len(dataset), len(videos), train_cfg.epochs, steps_per_epoch,
                train_cfg.batch_size, run_cfg.device, ", amp" if use_amp else "")

    tic_run = time.perf_counter()
    steps_this_call = 0
    for epoch in range(start_epoch + 1, train_cfg.epochs + 1):
        model.train()
        tic = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        loader = _make_loader(dataset, ctx.shard(epoch_order(len(dataset), run_cfg.seed, epoch), train_cfg.batch_size),
                              ctx.local_batch(train_cfg.batch_size), run_cfg.workers, pin=device.type == "cuda")
        cb.on_epoch_start(epoch, len(loader))
        sums: dict[str, float] = {}
        total, n = 0.0, 0
        for i, batch in enumerate(loader):
            batch = batch.to(device, non_blocking=True)  # (B, T+1, 3, H, W)
            clip, target = batch[:, :-1], batch[:, -1]  # (B, T, 3, H, W), (B, 3, H, W)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                outputs = net(clip)
            # The losses run in float32 whatever autocast produced (PSNR-scale errors are small).
            outputs = {k: v.float() for k, v in outputs.items()}
            loss, terms = total_loss(outputs, clip, target, train_cfg.loss)
            if not torch.isfinite(loss):
                raise RuntimeError(f"the loss became {float(loss)} at epoch {epoch}, step {step + 1} "
                                   f"(terms {terms}); lower --lr or check the data")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            steps_this_call += 1
            value, terms = ctx.average(float(loss.detach()), terms)
            total += value
            n += 1
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            cb.on_step(epoch, i + 1, value, terms)
            if stop_after_steps is not None and steps_this_call >= stop_after_steps:
                logger.info("stopping after %d steps (stop_after_steps) in epoch %d", steps_this_call, epoch)
                return TrainResult(last, epoch - 1, step, history, start_epoch if state else None,
                                   time.perf_counter() - tic_run)
        scheduler.step()
        summary = EpochSummary(epoch, step, total / max(n, 1), {k: v / max(n, 1) for k, v in sums.items()}, lr,
                               time.perf_counter() - tic)
        history.append(summary)
        extra = {**extra_static, "history": [h.as_dict() for h in history], "rng": _rng_state(),
                 "scaler": scaler.state_dict() if use_amp else {}}
        if not ctx.is_main:
            continue
        save_checkpoint(last, model, optimizer=optimizer, scheduler=scheduler, epoch=epoch, step=step, extra=extra)
        if run_cfg.keep_epochs:
            # A copy of a complete file, so it is as safe as last.pt itself.
            from m2s2l_edge.io import atomic_write

            atomic_write(out / f"epoch_{epoch:03d}.pt", lambda p: shutil.copyfile(last, p))
        atomic_write_text(out / HISTORY, json.dumps([h.as_dict() for h in history], indent=2))
        logger.info("epoch %d/%d: loss %.4f (%s), lr %.2e, %.1f s", epoch, train_cfg.epochs, summary.loss,
                    ", ".join(f"{k} {v:.4f}" for k, v in summary.terms.items()), lr, summary.seconds)
        cb.on_epoch_end(summary, last)
    return TrainResult(last, train_cfg.epochs, step, history, start_epoch if state else None,
                       time.perf_counter() - tic_run)


def _switches(cfg: ModelConfig) -> str:
    on = [name for name, flag in (("multi-scale spatial", cfg.multi_scale_spatial),
                                  ("multi-scale temporal", cfg.multi_scale_temporal),
                                  ("decomposition", cfg.decompose)) if flag]
    return ", ".join(on) if on else "baseline"


def load_history(out_dir: str | Path) -> list[dict]:
    """The per-epoch summaries a run wrote (``<out>/history.json``); empty when there are none yet."""
    path = Path(out_dir) / HISTORY
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []

