"""`m2s2l-edge train`: train M²S²L on the normal videos of a data set, with exact resumption."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors

DATASET_HELP = "Data set layout: ped2, avenue, shanghaitech, synthetic or custom."


def register(app: typer.Typer) -> None:
    app.command("train")(train)


def prefer_passive_openmp() -> None:
    """Let idle OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE), unless the user chose a policy.

    On a busy CPU, PyTorch's spinning OpenMP workers wait for each other at every parallel region: a training step
    of the demo model took 5-25 s instead of 0.6-1.2 s on a shared 2-core machine (load 6-7). On an idle machine
    passive waiting costs little. libgomp reads the variable when it is loaded, so this must run before the first
    ``import torch`` of the process (our commands import torch lazily; elsewhere it is a no-op).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


class RichTrainProgress:
    """Train callbacks drawing one rich progress bar per epoch with the running loss terms."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.task = None
        self.epochs = 0
        self.means: dict[str, float] = {}
        self.n = 0

    def on_start(self, *, total_epochs: int, start_epoch: int, steps_per_epoch: int, clips: int) -> None:
        self.epochs = total_epochs
        if start_epoch:
            self.progress.console.print(f"resuming after epoch {start_epoch} of {total_epochs}")
        self.progress.console.print(f"{clips} training clips, {steps_per_epoch} steps per epoch")

    def on_epoch_start(self, epoch: int, steps: int) -> None:
        self.means, self.n = {}, 0
        desc = f"epoch {epoch}/{self.epochs}"
        if self.task is None:
            self.task = self.progress.add_task(desc, total=steps, terms="")
        else:
            self.progress.reset(self.task, total=steps, description=desc, terms="")

    def on_step(self, epoch: int, step_in_epoch: int, loss: float, terms: dict[str, float]) -> None:
        self.n += 1
        for k, v in {"loss": loss, **terms}.items():
            self.means[k] = self.means.get(k, 0.0) + (v - self.means.get(k, 0.0)) / self.n
        text = "  ".join(f"{k} {v:.4f}" for k, v in self.means.items())
        self.progress.update(self.task, completed=step_in_epoch, terms=text)

    def on_epoch_end(self, summary, checkpoint: Path) -> None:
        # The epoch's summary line comes from m2s2l_edge.train's log; only mark where the checkpoint went.
        self.progress.console.print(f"epoch {summary.epoch}/{self.epochs} saved to {checkpoint}", style="dim")


def train(
    data: Annotated[Path, typer.Option(help="Data set root (see DESIGN.md §4 for the layouts read).")],
    dataset: Annotated[str, typer.Option(help=DATASET_HELP)],
    out: Annotated[Path, typer.Option("--out", help="Run folder: last.pt, history.json (and epoch_NNN.pt).")] = Path(
        "runs/train"),
    preset: Annotated[str, typer.Option(help="Model preset (paper, small, tiny).")] = "small",
    ablation: Annotated[str | None, typer.Option(help="Paper ablation M1-M4 (default: M4, the full model).")] = None,
    loss_set: Annotated[str, typer.Option(help="Loss ablation: L1 frame, L2 +motion, L3 +separation.")] = "L3",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a model config field, KEY=VALUE (repeatable), e.g. --set image_size=64.")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs to train (the total, also when resuming).")] = 60,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Clips per batch (default 4; custom data: the validated recipe's).")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Initial Adam learning rate (default 2e-4, our choice; custom data: the validated recipe's).")] = None,
    lr_step: Annotated[int, typer.Option(min=1, help="Halve the learning rate every N epochs (paper: 20).")] = 20,
    stride: Annotated[int, typer.Option(min=1, help="Step between the start frames of training clips.")] = 1,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    amp: Annotated[bool | None, typer.Option(
        "--amp/--no-amp", help="Mixed precision (default: on with --device cuda, off on the CPU).")] = None,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and of every epoch's data order.")] = 0,
    name: Annotated[str | None, typer.Option(help="MNAD folder name when not the data set's usual one.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue <out>/last.pt after an interruption.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in --out.")] = False,
    keep_epochs: Annotated[bool, typer.Option(help="Also keep a checkpoint per epoch (epoch_NNN.pt).")] = False,
) -> None:
    """Train on the normal training videos; <out>/last.pt after the last epoch is the result."""
    prefer_passive_openmp()
    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"{device!r}; valid: cpu, cuda", param_hint="--device")
    with user_errors():
        from m2s2l_edge.cli.progress import make_progress
        from m2s2l_edge.config import LossConfig, TrainConfig, training_recipe
        from m2s2l_edge.train import DataConfig, RunConfig
        from m2s2l_edge.train import train as run_training

        # Defaults validated for the kind of data (custom footage: RESULTS.md "Real footage"); any value the
        # user gives (--set, --lr, --batch-size) wins over the recipe's.
        recipe = training_recipe(dataset, preset)
        model_cfg = build_model_config(preset, ablation, {**recipe.model, **parse_overrides(set_)})
        batch_size = recipe.batch_size if batch_size is None else batch_size
        lr = recipe.lr if lr is None else lr
        if recipe.note:
            typer.echo(f"{dataset} data, preset {preset}: recipe {recipe.note} (where not set by an option)",
                       err=True)
        train_cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, lr_step_epochs=lr_step,
                                loss=LossConfig().with_loss_set(loss_set))
        data_cfg = DataConfig(str(data), dataset, name=name, stride=stride)
        run_cfg = RunConfig(str(out), device=device, amp=amp, workers=workers, seed=seed, resume=resume,
                            overwrite=overwrite, keep_epochs=keep_epochs)
        with make_progress(field="terms") as progress:
            result = run_training(model_cfg, train_cfg, data_cfg, run_cfg, RichTrainProgress(progress))
        _plot_history(out)
    typer.echo(f"trained {result.epochs} epochs ({result.step} steps) in {result.seconds:.0f} s: {result.checkpoint}")


def _plot_history(out: Path) -> None:
    from m2s2l_edge.plots import plot_training
    from m2s2l_edge.train import load_history

    history = load_history(out)
    if history:
        plot_training(history, out / "loss.png")
