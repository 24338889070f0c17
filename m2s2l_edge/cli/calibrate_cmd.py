"""`m2s2l-edge calibrate`: fit a camera's calibration (score distribution, threshold) on its normal footage."""

from __future__ import annotations

from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors
from m2s2l_edge.cli.options import (
    Batch,
    Device,
    Engine,
    JsonOut,
    Onnx,
    Out,
    Overwrite,
    Preset,
    Seed,
    ServedModel,
    Server,
    StreamScore,
    Threads,
    Weights,
    check_distinct_paths,
    check_json_target,
    check_output_file,
    emit_json,
    json_to_stdout,
    model_source,
    open_backend,
)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate)


def calibrate(
    source: Annotated[list[str], typer.Option(
        "--source", help="Normal footage of the camera: video files or frame folders (repeatable).")],
    out: Out = None,
    weights: Weights = None,
    onnx: Onnx = None,
    engine: Engine = None,
    server: Server = None,
    model: ServedModel = None,
    preset: Preset = None,
    seed: Seed = 0,
    score: StreamScore = "stream",
    false_alarms_per_hour: Annotated[float, typer.Option(
        "--false-alarms-per-hour",
        help="Target rate of false events on normal footage; sets the threshold.")] = 1.0,
    stride: Annotated[int, typer.Option("--stride", min=1, help="Score every K-th frame (as watch will).")] = 1,
    batch: Batch = None,
    overwrite: Overwrite = False,
    json_out: JsonOut = None,
    device: Device = None,
    threads: Threads = None,
) -> None:
    """Run the model on normal footage and store its score's statistics and a threshold (cam.calib.json)."""
    from m2s2l_edge.cli.environment import prefer_passive_openmp

    prefer_passive_openmp()
    with user_errors():
        from m2s2l_edge.watch.calibration import save
        from m2s2l_edge.watch.pipeline import calibrate_footage

        if out is None:
            raise ValueError("give --out FILE.calib.json")
        check_output_file(out, overwrite=overwrite)
        check_json_target(json_out)
        check_distinct_paths({"--out": out, "--json": json_out},
                             {**{f"--source {s}": s for s in source},
                              "--weights": weights, "--onnx": onnx, "--engine": engine})
        src = model_source(weights=weights, onnx=onnx, engine=engine, preset=preset, seed=seed, server=server,
                           model=model)
        backend = open_backend(src, device=device, threads=threads)
        cal = calibrate_footage(backend, source, score=score, model_path=src.path,
                                false_alarms_per_hour=false_alarms_per_hour, stride=stride, batch=batch)
        save(cal, out)
    emit_json(cal.to_dict(), json_out)
    if cal.warning:
        typer.echo(f"warning: {cal.warning}", err=True)
    typer.echo(f"calibrated the {cal.score} score on {cal.count} frames ({cal.stream_seconds:.0f} s of footage): "
               f"median fused PSNR {cal.stats.center:.2f} dB, robust σ {cal.stats.scale:.3f} dB; threshold "
               f"{cal.threshold:.2f} for {cal.false_alarms_per_hour:g} false alarms per hour ({cal.threshold_method}); "
               f"wrote {out}", err=json_to_stdout(json_out))
