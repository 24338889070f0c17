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


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)


def _check_out(out: Path, overwrite: bool) -> None:
    """Up front: --out writable, and new, empty, or (with --overwrite) an earlier evaluation's folder."""
    from m2s2l_edge.evaluation.outputs import check_replaceable

    check_output_dir(out, overwrite=overwrite)
    check_replaceable(out, overwrite)


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
             "Default: paper on ped2/avenue/shanghaitech/synthetic, patch on custom. (stream: with --calibration.)",
    )] = None,
    calibration: Annotated[Path | None, typer.Option(
        help="A camera's calibration (from `m2s2l-edge calibrate`, for this model): score every video as that "
             "camera scores it live (its score, normal statistics and smoothing; no per-video normalisation), so "
             "the AUC is the one watch would reach on this footage. Frames at or above its threshold are counted per "
             "video.")] = None,
    json_out: JsonOut = None,
) -> None:
    """Score every test video; report the micro (published protocol) and macro frame-level AUC when there are
    labels."""
    prefer_passive_openmp()
    from rich.console import Console

    console = Console(stderr=json_to_stdout(json_out))  # '--json -': stdout carries the JSON only
    with user_errors():
        from m2s2l_edge.evaluation.datasets import load_footage
        from m2s2l_edge.evaluation.outputs import REPORT_FRAMES, run_record, write_outputs
        from m2s2l_edge.evaluation.run import DEFAULT_BATCH, eval_score
        from m2s2l_edge.runtime import check_preset

        dataset = dataset or "custom"
        cal = None
        if calibration is not None:
            from m2s2l_edge.watch.calibration import load

            cal = load(calibration)
        score = eval_score(dataset, score, calibrated=None if cal is None else cal.score)
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
        check_preset(runner, source.path, preset)
        if cal is not None:  # the rule watch --calibration follows: the same model, score, λ, T and resolution
            from m2s2l_edge.watch.calibration import check_matches, identity_of
            from m2s2l_edge.watch.scorer import resolve_scoring

            if lambda_ is not None and lambda_ != cal.score_config.lam:
                raise ValueError(f"--lambda {lambda_} differs from the λ the calibration {calibration} was fitted "
                                 f"with ({cal.score_config.lam}): leave --lambda out")
            check_matches(cal, identity_of(resolve_scoring(runner, cal.score), source.path),
                          f"calibration file {calibration}")
        from m2s2l_edge.cli.progress import run_with_progress
        from m2s2l_edge.cli.report import print_result

        result = run_with_progress(runner, videos, label_arrays, batch or DEFAULT_BATCH, console, score=score,
                                   lam=lambda_, dataset=dataset, top_frames=REPORT_FRAMES, calibration=cal,
                                   calibration_source=None if calibration is None else str(calibration))
        meta = run_record(runner, dataset=dataset, data=data, kind=source.kind, source=source.path)
        paths = write_outputs(result, out, meta=meta, plots=plots, replace=overwrite)
        print_result(result, paths, console, meta.get("selective_scan"))
        emit_json({**meta, **result.as_dict(), "files": paths}, json_out)
