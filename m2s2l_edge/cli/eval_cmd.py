"""`m2s2l-edge eval`: frame-level AUC on a labelled test set, or per-frame scores of unlabelled footage, with plots.

Output rule (README, "Options"): ``--out`` must be new or empty, or hold an earlier evaluation and ``--overwrite``
be given; the new run's files are written into a fresh folder that then replaces it, so two runs never mix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors
from m2s2l_edge.cli.options import (
    Batch,
    Device,
    Engine,
    JsonOut,
    Onnx,
    Overwrite,
    Plugin,
    Preset,
    Threads,
    Weights,
    check_json_target,
    check_output_dir,
    device_syntax,
    emit_json,
    json_to_stdout,
    model_source,
    open_backend,
)

DEFAULT_BATCH = 8


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)


def run_with_progress(backend, videos, labels, lam: float, batch_size: int, console=None):
    """evaluate() with one rich progress bar over every predicted frame of the test set."""
    from m2s2l_edge.cli.progress import make_progress
    from m2s2l_edge.evaluate import backend_geometry, evaluate

    clip_len, _ = backend_geometry(backend)
    total = sum(max(0, len(v) - clip_len) for v in videos)
    with make_progress(console, unit="frames") as progress:
        task = progress.add_task("scoring", total=total)
        return evaluate(
            backend, videos, labels, lam, batch_size=batch_size,
            on_video=lambda i, name, n: progress.update(task, description=f"video {name} ({i + 1}/{len(videos)})"),
            on_batch=lambda n: progress.advance(task, n),
        )


def print_result(result, paths: dict, console=None, scan_path: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    auc = result.auc
    if auc is None:
        table = Table(title="anomaly scores per video (no labels)", show_edge=False)
        for col in ("video", "frames", "scored", "mean fused PSNR (dB)", "max score frame"):
            table.add_column(col, justify="left" if col == "video" else "right")
        for v in result.videos:
            fused = f"{v.fused.mean():.2f}" if len(v.fused) else "–"
            peak = str(int(v.targets[v.scores.argmax()])) if len(v.targets) else "–"
            table.add_row(v.name, str(v.frames), str(len(v.targets)), fused, peak)
        console.print(table)
        console.print("no AUC computed: the footage has no labels (pass --labels FILE to compute one)")
    else:
        table = Table(title="frame-level AUC per video", show_edge=False)
        for col in ("video", "frames", "scored", "anomalous", "AUC"):
            table.add_column(col, justify="left" if col == "video" else "right")
        for v in result.videos:
            table.add_row(v.name, str(v.frames), str(len(v.targets)), str(int(v.scored_labels.sum())),
                          "–" if v.auc is None else f"{v.auc:.4f}")
        console.print(table)
        skipped = len(auc.skipped)
        note = f" ({skipped} single-class video{'s' if skipped != 1 else ''} skipped)" if skipped else ""
        console.print(f"[bold]micro AUC {auc.micro:.4f}[/bold]  (all videos concatenated; the published protocol)")
        macro = "n/a" if auc.videos_in_macro == 0 else f"{auc.macro:.4f}"
        console.print(f"macro AUC {macro}  (mean over {auc.videos_in_macro} of {len(result.videos)} videos{note})")
    console.print(f"λ = {result.lam}, {result.predicted_frames} frames scored in {result.seconds:.1f} s")
    if scan_path:
        console.print(scan_path)
    if paths:
        plots = ""
        if "overview" in paths:
            plots = "; plots: " + ", ".join(str(paths[k]) for k in ("roc", "overview") if k in paths)
            plots += f", {paths['plots']}/"
        console.print(f"results: {paths['results']}; per frame: {paths['scores']}/<video>.csv (raw PSNRs, fused "
                      f"PSNR, score) and <video>.npy (score){plots}")


def _check_out(out: Path, overwrite: bool) -> None:
    """Up front: --out writable, and new, empty, or (with --overwrite) an earlier evaluation's folder."""
    from m2s2l_edge.evaluate import RESULTS

    check_output_dir(out, overwrite=overwrite)
    if overwrite and out.is_dir() and any(out.iterdir()) and not (out / RESULTS).is_file():
        raise FileExistsError(f"--out {out} holds files but no {RESULTS}, so it is not an earlier evaluation; "
                              "--overwrite replaces only those: choose a new or empty folder")


def eval_(
    data: Annotated[Path, typer.Option(
        help="Data set root, or footage: a video file, a frames folder or a folder of videos.")],
    dataset: Annotated[str | None, typer.Option(
        help="ped2, avenue, shanghaitech, synthetic or custom (default: custom; custom footage without labels is "
             "scored without an AUC).")] = None,
    weights: Weights = None,
    onnx: Onnx = None,
    engine: Engine = None,
    preset: Preset = None,
    plugin: Plugin = None,
    lambda_: Annotated[float | None, typer.Option(
        "--lambda", help="Weight λ of the frame PSNR (default: the paper's per data set, 0.5 for custom/synthetic).",
    )] = None,
    labels: Annotated[Path | None, typer.Option(
        help="Label file or folder (default: searched beside the data).")] = None,
    name: Annotated[str | None, typer.Option(help="MNAD folder name when not the data set's usual one.")] = None,
    batch: Batch = None,
    device: Device = None,
    threads: Threads = None,
    out: Annotated[Path, typer.Option(
        "--out", help="Output folder: results.json, scores/, roc.png, plots/ (new, or see --overwrite).")] = Path(
        "runs/eval"),
    overwrite: Overwrite = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the PNG plots.")] = True,
    json_out: JsonOut = None,
) -> None:
    """Score every test video; report the micro (published protocol) and macro frame-level AUC when there are
    labels."""
    from m2s2l_edge.cli.train_cmd import prefer_passive_openmp

    prefer_passive_openmp()
    from rich.console import Console

    console = Console(stderr=json_to_stdout(json_out))  # '--json -': stdout carries the JSON only
    with user_errors():
        from m2s2l_edge.evaluate import default_lambda, load_footage, write_outputs

        dataset = dataset or "custom"
        source = model_source(weights=weights, onnx=onnx, engine=engine, preset=preset, allow_fresh=False)
        if plugin is not None and source.kind != "tensorrt":
            raise ValueError("--plugin goes with --engine")
        device_syntax(device)  # a bad spelling fails now; open_backend checks the device itself
        lam = default_lambda(dataset) if lambda_ is None else lambda_
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"--lambda must lie in [0, 1], got {lam}")
        _check_out(out, overwrite)
        check_json_target(json_out)
        # Data and labels first: a mismatch fails in a second, before any model work.
        videos, label_arrays = load_footage(data, dataset, name=name, labels_path=labels)
        options = {"plugin": plugin} if plugin is not None else {}
        runner = open_backend(source, device=device, threads=threads, **options)
        _check_preset(runner, source, preset)
        result = run_with_progress(runner, videos, label_arrays, lam, batch or DEFAULT_BATCH, console)
        scan_path = (getattr(runner, "metadata", None) or {}).get("selective_scan")
        meta = {"dataset": dataset, "data": str(data), "backend": source.kind, "source": str(source.path),
                "title": f"({dataset})", **({"selective_scan": scan_path} if scan_path else {})}
        paths = write_outputs(result, out, meta=meta, plots=plots, replace=overwrite)
        print_result(result, paths, console, scan_path)
        emit_json({**meta, **result.as_dict(), "files": paths}, json_out)


def _check_preset(backend, source, preset: str | None) -> None:
    held = (getattr(backend, "metadata", None) or {}).get("preset")
    if preset is not None and held is not None and held != preset:
        raise ValueError(f"{source.path} holds preset {held!r}, not {preset!r}")
