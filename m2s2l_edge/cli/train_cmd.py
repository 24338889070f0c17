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


def parse_overrides(items: list[str] | None) -> dict:
    """``["dim=32", "patch_sizes=8,16,32"]`` → ModelConfig overrides, typed after the preset's fields."""
    import dataclasses

    from m2s2l_edge.config import ModelConfig

    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    out: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields or key == "name":
            valid = ", ".join(k for k in fields if k != "name")
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of: {valid}")
        kind = str(fields[key].type)
        try:
            if "tuple" in kind:
                elem = float if "float" in kind else int
                out[key] = tuple(elem(v) for v in value.split(",") if v.strip())
            elif "bool" in kind:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                out[key] = value.lower() in ("true", "1", "yes")
            elif "int" in kind:
                out[key] = int(value)
            elif "float" in kind:
                out[key] = float(value)
            else:
                out[key] = value
        except ValueError:
            raise ValueError(f"--set {item!r}: {value!r} is not a valid {kind} for {key}") from None
    return out


def build_model_config(preset: str, ablation: str | None, overrides: dict):
    from m2s2l_edge.config import get_preset

    cfg = get_preset(preset, **overrides)
    return cfg.with_ablation(ablation) if ablation else cfg


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
        "--batch", min=1, help="Clips per optimisation step (default 4; custom data: the validated recipe's).")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Initial Adam learning rate (default 2e-4, our choice; custom data: the validated recipe's).")] = None,
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
    """Train on the normal training videos; <out>/last.pt after the last epoch is the result."""
    prefer_passive_openmp()
    with user_errors(kept=lambda: _kept(out)):
        from m2s2l_edge.cli.options import check_device, check_output_dir
        from m2s2l_edge.cli.progress import RichTrainProgress, make_progress
        from m2s2l_edge.config import LossConfig, Recipe, TrainConfig, training_recipe
        from m2s2l_edge.train import DataConfig, RunConfig
        from m2s2l_edge.train import train as run_training

        device = check_device(device)
        # Writability only: whether a run already in --out may be replaced is train()'s rule (--resume /
        # --overwrite), checked there before any work.
        check_output_dir(out, overwrite=True)
        # Defaults validated for the kind of data (custom footage: RESULTS.md "Real footage"; M²S²L only, the peers
        # keep the plain defaults); any value the user gives (--set, --lr, --batch) wins over the recipe's.
        recipe = training_recipe(dataset, preset) if model == "m2s2l" else Recipe()
        model_cfg = build_model_config(preset, ablation, {**recipe.model, **parse_overrides(set_)})
        batch = recipe.batch_size if batch is None else batch
        lr = recipe.lr if lr is None else lr
        if recipe.note:
            typer.echo(f"{dataset} data, preset {preset}: recipe {recipe.note} (where not set by an option)",
                       err=True)
        train_cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, lr_step_epochs=lr_step,
                                loss=LossConfig().with_loss_set(loss_set))
        data_cfg = DataConfig(str(data), dataset, name=name, stride=stride)
        run_cfg = RunConfig(str(out), device=device, amp=amp, workers=workers, seed=seed, resume=resume,
                            overwrite=overwrite, keep_epochs=keep_epochs)
        with make_progress(field="terms") as progress:
            result = run_training(model_cfg, train_cfg, data_cfg, run_cfg, RichTrainProgress(progress), arch=model)
        _plot_history(out)
    typer.echo(f"trained {result.epochs} epochs ({result.step} steps) in {result.seconds:.0f} s: {result.checkpoint}")


def _kept(out: Path) -> str:
    """What an interruption leaves: the last complete checkpoint (each epoch's is written atomically)."""
    from m2s2l_edge.checkpoint import read_checkpoint
    from m2s2l_edge.train import LAST

    last = out / LAST
    if not last.is_file():
        return "no epoch was completed, so nothing was written"
    try:  # the file itself, not history.json: an interruption may fall between the two writes
        done = f" (epoch {read_checkpoint(last)['epoch']})"
    except (OSError, ValueError, KeyError):
        done = ""
    return f"kept {last}{done}, the last complete epoch; continue with the same command and --resume"


def _plot_history(out: Path) -> None:
    from m2s2l_edge.plots import plot_training
    from m2s2l_edge.train import load_history

    history = load_history(out)
    if history:
        plot_training(history, out / "loss.png")
