"""`m2s2l-edge eval`: frame-level AUC on a labelled test set, or per-frame scores of unlabelled footage, with plots.

Output rule (README, "Options"): ``--out`` must be new or empty, or hold an earlier evaluation and ``--overwrite``
be given; the new run's files are written into a fresh folder that then replaces it, so two runs never mix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.environment import prefer_passive_openmp
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


def _check_out(out: Path, overwrite: bool) -> None:
    """Up front: --out writable, and new, empty, or (with --overwrite) an earlier evaluation's folder."""
    from m2s2l_edge.evaluation.outputs import RESULTS

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
        "--lambda", help="Weight λ of the frame PSNR (default: the model's stored λ, else the paper's per data set, "
                         "else 0.5).",
    )] = None,
    labels: Annotated[Path | None, typer.Option(
        help="Label file or folder (default: searched beside the data).")] = None,
    name: Annotated[str | None, typer.Option(help="MNAD folder name when not the data set's usual one.")] = None,
    batch: Batch = None,
    device: Device = None,
    threads: Threads = None,
    out: Annotated[Path, typer.Option(
        "--out", help="Output folder: report.html, results.json, scores/, roc.png, plots/ (new, or see "
                      "--overwrite).")] = Path(
        "runs/eval"),
    overwrite: Overwrite = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the PNG plots.")] = True,
    score: Annotated[str | None, typer.Option(
        help="Anomaly score: paper (frame PSNRs, the published protocol) or patch (worst-patch PSNRs, stalled "
             "frames flagged, a median floor and a two-sided motion term, normalised per video; our addition). "
             "Default: paper on ped2/avenue/shanghaitech/synthetic, patch on custom. (stream: watch, calibrate.)",
    )] = None,
    json_out: JsonOut = None,
) -> None:
    """Score every test video; report the micro (published protocol) and macro frame-level AUC when there are
    labels."""
    prefer_passive_openmp()
    from rich.console import Console

    console = Console(stderr=json_to_stdout(json_out))  # '--json -': stdout carries the JSON only
    with user_errors():
        from m2s2l_edge.config import default_score_name, get_score
        from m2s2l_edge.evaluation.datasets import load_footage
        from m2s2l_edge.evaluation.outputs import REPORT_FRAMES, write_outputs
        from m2s2l_edge.evaluation.run import VIDEO_SCORES

        dataset = dataset or "custom"
        if score is not None:
            get_score(score)  # an unknown name fails before any work
            if score not in VIDEO_SCORES:
                raise ValueError(f"--score {score} is calibrated per camera, not per video: use it with watch and "
                                 f"calibrate; eval scores with {' or '.join(VIDEO_SCORES)}")
        source = model_source(weights=weights, onnx=onnx, engine=engine, preset=preset, allow_fresh=False)
        if plugin is not None and source.kind != "tensorrt":
            raise ValueError("--plugin goes with --engine")
        device_syntax(device)  # a bad spelling fails now; open_backend checks the device itself
        if lambda_ is not None and not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"--lambda must lie in [0, 1], got {lambda_}")
        _check_out(out, overwrite)
        check_json_target(json_out)
        # Data and labels first: a mismatch fails in a second, before any model work.
        videos, label_arrays = load_footage(data, dataset, name=name, labels_path=labels)
        options = {"plugin": plugin} if plugin is not None else {}
        runner = open_backend(source, device=device, threads=threads, **options)
        _check_preset(runner, source, preset)
        from m2s2l_edge.cli.progress import run_with_progress
        from m2s2l_edge.cli.report import print_result

        result = run_with_progress(runner, videos, label_arrays, batch or DEFAULT_BATCH, console,
                                   score=default_score_name(dataset) if score is None else score, lam=lambda_,
                                   dataset=dataset, top_frames=REPORT_FRAMES)
        scan_path = (getattr(runner, "metadata", None) or {}).get("selective_scan")
        meta = {"dataset": dataset, "data": str(data), "backend": source.kind, "source": str(source.path),
                "title": f"({dataset})",
                **({"selective_scan": scan_path} if scan_path else {})}
        paths = write_outputs(result, out, meta=meta, plots=plots, replace=overwrite)
        print_result(result, paths, console, scan_path)
        emit_json({**meta, **result.as_dict(), "files": paths}, json_out)


def _check_preset(backend, source, preset: str | None) -> None:
    held = (getattr(backend, "metadata", None) or {}).get("preset")
    if preset is not None and held is not None and held != preset:
        raise ValueError(f"{source.path} holds preset {held!r}, not {preset!r}")
