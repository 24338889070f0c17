"""`m2s2l-edge demo`: the whole pipeline on generated video, on a laptop CPU, in minutes.

generate a synthetic surveillance data set → train the `small` preset → evaluate (frame-level AUC) → plots.

The settings below were tuned for a shared 2-core CPU (see benchmarks/bench_demo.py); none was chosen by looking
at the test labels of the seed the demo reports. They are the only place the demo differs from a real run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.environment import prefer_passive_openmp
from m2s2l_edge.cli.errors import user_errors
from m2s2l_edge.cli.options import (
    Device,
    JsonOut,
    check_device,
    check_json_target,
    check_output_dir,
    emit_json,
    json_to_stdout,
)


@dataclass(frozen=True)
class DemoSettings:
    # Synthetic data (m2s2l_edge.data.synthetic): rendered at 128 px, like the small preset's native input.
    n_train: int = 8
    n_test: int = 8
    frames: int = 120
    render_size: int = 128
    # Anomaly kinds of the test videos. `frozen` (a stalled camera) is left out by default: a repeated frame is the
    # most predictable input there is, so any future-frame-prediction score (M²S²L's, as in the paper) ranks a stall
    # as the most normal footage of its video. With it the demo measured micro AUC 0.90-0.905 (2 of 8 test videos
    # hold a stall; their AUCs stay at 0.76 and 0.81 however long the model trains); `--kinds` adds it back.
    kinds: tuple[str, ...] = ("fast_object", "foreign_object", "running")
    # Model: the `small` preset with these overrides. 64 px instead of 128 px cuts the decoders' cost (most of the
    # MACs) by 4×, which is what lets a CPU train it in minutes.
    preset: str = "small"
    overrides: dict = field(default_factory=lambda: {"image_size": 64})
    # Optimisation: a higher rate than the paper's 2e-4 because the demo trains for a few hundred steps only.
    epochs: int = 3
    batch_size: int = 8
    lr: float = 1e-3
    stride: int = 1
    eval_batch: int = 16


DEMO = DemoSettings()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the data, the run and the evaluation (reused: the "
                                      "demo's own data/, run/ and eval/ in it are replaced).")] = Path("demo_output"),
    seed: Annotated[int, typer.Option(help="Seed of the generated data, the initialisation and the data order.")] = 0,
    epochs: Annotated[int | None, typer.Option(min=1, help=f"Training epochs (default {DEMO.epochs}).")] = None,
    device: Device = None,
    kinds: Annotated[str | None, typer.Option(
        help="Comma-separated anomaly kinds of the test videos (fast_object, foreign_object, running, frozen; "
             f"default: {','.join(DEMO.kinds)}).")] = None,
    json_out: JsonOut = None,
) -> None:
    """Generate synthetic video, train the small preset on it, evaluate and plot: the pipeline end to end."""
    prefer_passive_openmp()
    from rich.console import Console

    console = Console(stderr=json_to_stdout(json_out))  # '--json -': stdout carries the JSON only
    settings = DEMO
    if epochs is not None:
        settings = dataclasses.replace(settings, epochs=epochs)
    if kinds is not None:
        settings = dataclasses.replace(settings, kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()))
    with user_errors():
        device = check_device(device)
        check_output_dir(out, overwrite=True)  # the demo reuses its folder; it must be writable before the work
        check_json_target(json_out)
        summary = run_demo(settings, out, seed=seed, device=device, console=console)
        _print_summary(summary, console)
        emit_json(summary, json_out)


def run_demo(s: DemoSettings, out: Path, *, seed: int, device: str, console) -> dict:
    import torch

    from m2s2l_edge.cli.progress import RichTrainProgress, make_train_progress, run_with_progress
    from m2s2l_edge.cli.report import print_result
    from m2s2l_edge.config import LossConfig, TrainConfig, get_preset
    from m2s2l_edge.data import generate_dataset
    from m2s2l_edge.evaluation.datasets import load_test_set
    from m2s2l_edge.evaluation.outputs import REPORT_FRAMES, write_outputs
    from m2s2l_edge.report.plots import plot_training
    from m2s2l_edge.runtime import open_model
    from m2s2l_edge.training.trainer import DataConfig, RunConfig, load_history, train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_root, run_dir, eval_dir = out / "data", out / "run", out / "eval"
    times: dict[str, float] = {}
    tic = time.perf_counter()

    console.rule("[bold]1/3 generating synthetic surveillance video")
    with console.status(f"rendering {s.n_train} normal training and {s.n_test} test videos of {s.frames} frames "
                        f"(anomalies: {', '.join(s.kinds)})"):
        generate_dataset(data_root, name="synthetic", n_train=s.n_train, n_test=s.n_test, frames=s.frames,
                         size=s.render_size, seed=seed, kinds=s.kinds)
    times["generate_s"] = time.perf_counter() - tic
    console.print(f"wrote {data_root / 'synthetic'} in {times['generate_s']:.0f} s")

    console.rule(f"[bold]2/3 training the {s.preset} preset ({_overrides_text(s)}) on the CPU"
                 if device == "cpu" else f"[bold]2/3 training the {s.preset} preset on {device}")
    model_cfg = get_preset(s.preset, **s.overrides)
    train_cfg = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, loss=LossConfig())
    t0 = time.perf_counter()
    with make_train_progress(console) as progress:
        result = train(model_cfg, train_cfg, DataConfig(str(data_root), "synthetic", stride=s.stride),
                       RunConfig(str(run_dir), device=device, seed=seed, overwrite=True), RichTrainProgress(progress))
    plot_training(load_history(run_dir), run_dir / "loss.png", title=f"demo training loss ({s.preset} preset)")
    times["train_s"] = time.perf_counter() - t0

    console.rule("[bold]3/3 evaluating on the test videos (frame-level AUC)")
    t0 = time.perf_counter()
    videos, labels = load_test_set(data_root, "synthetic")
    backend = open_model("torch", str(result.checkpoint), device=device, expected_preset=s.preset)
    evaluation = run_with_progress(backend, videos, labels, s.eval_batch, console, dataset="synthetic",
                                   top_frames=REPORT_FRAMES)
    paths = write_outputs(evaluation, eval_dir, plots=True, replace=True,
                          meta={"dataset": "synthetic", "data": str(data_root), "backend": "torch",
                                "source": str(result.checkpoint), "title": "(demo, synthetic)"})
    times["eval_s"] = time.perf_counter() - t0
    times["total_s"] = time.perf_counter() - tic
    print_result(evaluation, {}, console)

    from m2s2l_edge.efficiency.benchmarking import machine_info

    return {
        "micro_auc": evaluation.auc.micro,
        "macro_auc": None if math.isnan(evaluation.auc.macro) else evaluation.auc.macro,
        "videos_in_macro": evaluation.auc.videos_in_macro,
        "per_video_auc": {v.name: v.auc for v in evaluation.videos},
        **times,
        "seed": seed,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "settings": dataclasses.asdict(s),
        "final_train_loss": result.history[-1].loss if result.history else None,
        "train_steps": result.step,
        "files": {"data": str(data_root), "checkpoint": str(result.checkpoint),
                  "loss_plot": str(run_dir / "loss.png"), **{k: str(v) for k, v in paths.items()}},
        "machine": machine_info(),
    }


def _overrides_text(s: DemoSettings) -> str:
    return ", ".join(f"{k}={v}" for k, v in s.overrides.items()) or "as registered"


def _print_summary(summary: dict, console) -> None:
    files = summary["files"]
    console.rule("[bold]demo summary")
    console.print(f"[bold]frame-level AUC {summary['micro_auc']:.3f}[/bold] (micro, the published protocol); "
                  f"macro {summary['macro_auc'] or math.nan:.3f} over {summary['videos_in_macro']} videos")
    console.print(f"time: {summary['total_s'] / 60:.1f} min in all (data {summary['generate_s']:.0f} s, "
                  f"training {summary['train_s']:.0f} s for {summary['train_steps']} steps, "
                  f"evaluation {summary['eval_s']:.0f} s)")
    console.print(f"look at:  {files['report']}  (open in a browser: ROC, scores over time, the frames the "
                  "model predicted worst beside its predictions and error maps)")
    console.print(f"          {files['overview']}  (scores over time, anomalies shaded)")
    console.print(f"          {files['roc']}  (ROC curve)")
    console.print(f"          {files['plots']}/<video>.png, {files['loss_plot']}")
    console.print(f"numbers:  {files['results']}; per-frame scores in {files['scores']}/")
    console.print(f"model:    {files['checkpoint']} (evaluate again with `m2s2l-edge eval --data {files['data']} "
                  f"--dataset synthetic --weights {files['checkpoint']}`)")
