"""`m2s2l-edge demo`: the whole pipeline on generated video, on a laptop CPU, in minutes.

generate a synthetic surveillance data set → train the `small` preset → evaluate (frame-level AUC) → plots. The
steps and the demo's settings are :mod:`m2s2l_edge.evaluation.demo`; this module parses, shows progress, prints.
"""

from __future__ import annotations

import dataclasses
import math
import time
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
from m2s2l_edge.evaluation.demo import DEMO, DemoSettings


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
    from m2s2l_edge.cli.progress import RichTrainProgress, make_train_progress, run_with_progress
    from m2s2l_edge.cli.report import print_result
    from m2s2l_edge.evaluation import demo as steps
    from m2s2l_edge.evaluation.outputs import REPORT_FRAMES

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = steps.DemoPaths.under(out)
    times: dict[str, float] = {}
    tic = time.perf_counter()

    console.rule("[bold]1/3 generating synthetic surveillance video")
    with console.status(f"rendering {s.n_train} normal training and {s.n_test} test videos of {s.frames} frames "
                        f"(anomalies: {', '.join(s.kinds)})"):
        data_set = steps.generate(s, paths, seed=seed)
    times["generate_s"] = time.perf_counter() - tic
    console.print(f"wrote {data_set} in {times['generate_s']:.0f} s")

    console.rule(f"[bold]2/3 training the {s.preset} preset ({s.overrides_text()}) on the CPU"
                 if device == "cpu" else f"[bold]2/3 training the {s.preset} preset on {device}")
    t0 = time.perf_counter()
    with make_train_progress(console) as progress:
        training = steps.train_model(s, paths, seed=seed, device=device, callbacks=RichTrainProgress(progress))
    times["train_s"] = time.perf_counter() - t0

    console.rule("[bold]3/3 evaluating on the test videos (frame-level AUC)")
    t0 = time.perf_counter()
    backend, videos, labels = steps.open_test(s, paths, training.checkpoint, device=device)
    evaluation = run_with_progress(backend, videos, labels, s.eval_batch, console, dataset=steps.DATASET,
                                   top_frames=REPORT_FRAMES)
    files = steps.write_evaluation(evaluation, paths, training.checkpoint)
    times["eval_s"] = time.perf_counter() - t0
    times["total_s"] = time.perf_counter() - tic
    print_result(evaluation, {}, console)
    return steps.summary(s, paths, evaluation=evaluation, training=training, files=files, times=times, seed=seed,
                         device=device)


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
