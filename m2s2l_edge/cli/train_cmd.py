"""`m2s2l-edge train`: train M²S²L on the normal videos of a data set, with exact resumption."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.environment import prefer_passive_openmp
from m2s2l_edge.cli.errors import user_errors
from m2s2l_edge.cli.options import Device

DATASET_HELP = "Data set layout: ped2, avenue, shanghaitech, synthetic or custom."


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def train(
    data: Annotated[Path, typer.Option(help="Data set root, video file, frames folder or folder of videos.")],
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)],
    out: Annotated[Path, typer.Option("--out", help="Run folder: last.pt, history.json (and epoch_NNN.pt).")] = Path(
        "runs/train"),
    preset: Annotated[str, typer.Option("--preset", help="Model preset (paper, small, tiny).")] = "small",
    model: Annotated[str, typer.Option(
        "--model", help="Architecture: m2s2l, or a peer (mnad, ffp) sized by the preset's clip length and "
                        "resolution, trained with its own objective.")] = "m2s2l",
    ablation: Annotated[str | None, typer.Option(help="Paper ablation M1-M4 (default: M4, the full model).")] = None,
    loss_set: Annotated[str, typer.Option(help="Loss ablation: L1 frame, L2 +motion, L3 +separation.")] = "L3",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a model config field, KEY=VALUE (repeatable), e.g. --set image_size=64.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs to train (the total, also when resuming).")] = 60,
    batch: Annotated[int | None, typer.Option(
        "--batch", min=1, help="Clips per optimisation step, over all processes under torchrun (default 4; custom "
                               "data: the validated recipe's).")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Initial Adam learning rate (default 2e-4, our choice; custom data: the validated recipe's).")] = None,
    foreground_weight: Annotated[float | None, typer.Option(
        min=0.0, help="Weigh the frame loss's moving pixels (and their neighbours) 1 + W times the static "
                      "background (default 0: a plain mean; our footage: more found offline, less live).")] = None,
    lr_step: Annotated[int, typer.Option(min=1, help="Halve the learning rate every N epochs (paper: 20).")] = 20,
    stride: Annotated[int, typer.Option(min=1, help="Step between the start frames of training clips.")] = 1,
    device: Device = None,
    amp: Annotated[bool | None, typer.Option(
        "--amp/--no-amp", help="Mixed precision (default: on with --device cuda, off on the CPU).")] = None,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and of every epoch's data order.")] = 0,
    name: Annotated[str | None, typer.Option(help="MNAD folder name when not the data set's usual one.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue <out>/last.pt after an interruption.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a run already in --out (its epoch_NNN.pt go when the new run's first epoch "
        "is saved).")] = False,
    keep_epochs: Annotated[bool, typer.Option(
        "--keep-epochs", help="Also keep a checkpoint per epoch (epoch_NNN.pt).")] = False,
) -> None:
    """Train on the normal training videos; <out>/last.pt after the last epoch is the result.

    Under torchrun (torchrun --nproc-per-node N -m m2s2l_edge train ...) the N processes train one model with
    DistributedDataParallel: --batch is the global batch (N must divide it), so they take the steps one process
    would; rank 0 alone writes --out and prints (docs/DISTRIBUTED.md).
    """
    prefer_passive_openmp()
    rank = _torchrun_rank()
    with user_errors(kept=lambda: _kept(out)), _quiet_unless_rank0(rank):
        from m2s2l_edge.cli.options import check_device, check_output_dir
        from m2s2l_edge.cli.progress import RichTrainProgress, make_train_progress
        from m2s2l_edge.config import LossConfig, TrainConfig
        from m2s2l_edge.training.distributed import joined_from_env
        from m2s2l_edge.training.settings import training_settings
        from m2s2l_edge.training.trainer import DataConfig, RunConfig, TrainCallbacks
        from m2s2l_edge.training.trainer import train as run_training

        device = check_device(device)
        # Writability only: whether a run already in --out may be replaced is train()'s rule (--resume /
        # --overwrite), checked there before any work.
        check_output_dir(out, overwrite=True)
        settings = training_settings(dataset, preset, arch=model, ablation=ablation, overrides=set_, batch=batch,
                                     lr=lr, foreground_weight=foreground_weight)
        model_cfg, batch = settings.model, settings.batch
        if settings.note:
            typer.echo(f"{dataset} data, preset {preset}: recipe {settings.note} (where not set by an option)",
                       err=True)
        train_cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=settings.lr, lr_step_epochs=lr_step,
                                loss=LossConfig(foreground_weight=settings.foreground_weight).with_loss_set(loss_set))
        data_cfg = DataConfig(str(data), dataset, name=name, stride=stride)
        run_cfg = RunConfig(str(out), device=device, amp=amp, workers=workers, seed=seed, resume=resume,
                            overwrite=overwrite, keep_epochs=keep_epochs)
        with joined_from_env(device, batch) as group:
            if rank:  # the other ranks train as quietly as they write: rank 0 reports for the job
                result = run_training(model_cfg, train_cfg, data_cfg, run_cfg, TrainCallbacks(), distributed=group,
                                      arch=model)
                return
            with make_train_progress() as progress:
                result = run_training(model_cfg, train_cfg, data_cfg, run_cfg, RichTrainProgress(progress),
                                      distributed=group, arch=model)
            _plot_history(out)
    typer.echo(f"trained {result.epochs} epochs ({result.step} steps) in {result.seconds:.0f} s: {result.checkpoint}")


def _torchrun_rank() -> int:
    """This process's rank under torchrun (0 outside it); a malformed environment is rank 0's to report."""
    import os

    try:
        return int(os.environ.get("RANK") or 0)
    except ValueError:
        return 0


class _quiet_unless_rank0:  # noqa: N801 - a context manager, reads like a statement
    """On ranks other than 0, bad input (which every rank finds the same way, before training) and Ctrl-C (which
    reaches every rank) end with their exit code but no line: rank 0 says it once. Anything else still speaks."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def __enter__(self) -> None:
        if self.rank:
            import logging

            logging.getLogger("m2s2l_edge").setLevel(logging.WARNING)

    def __exit__(self, exc_type, exc, tb) -> bool:
        from m2s2l_edge.cli.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, exit_code_for

        if not self.rank or exc is None or isinstance(exc, (typer.Exit, typer.Abort)):
            return False
        if isinstance(exc, KeyboardInterrupt):
            raise typer.Exit(EXIT_INTERRUPTED) from None
        if exit_code_for(exc) == EXIT_BAD_INPUT:
            raise typer.Exit(EXIT_BAD_INPUT) from None
        return False


def _kept(out: Path) -> str:
    """What an interruption leaves: the last complete checkpoint (each epoch's is written atomically)."""
    from m2s2l_edge.artifacts.checkpoint import read_checkpoint
    from m2s2l_edge.training.trainer import LAST

    last = out / LAST
    if not last.is_file():
        return "no epoch was completed, so nothing was written"
    try:  # the file itself, not history.json: an interruption may fall between the two writes
        done = f" (epoch {read_checkpoint(last)['epoch']})"
    except (OSError, ValueError, KeyError):
        done = ""
    return f"kept {last}{done}, the last complete epoch; continue with the same command and --resume"


def _plot_history(out: Path) -> None:
    from m2s2l_edge.report.plots import plot_training
    from m2s2l_edge.training.trainer import load_history

    history = load_history(out)
    if history:
        plot_training(history, out / "loss.png")
