"""`m2s2l-edge export`: ONNX with one SelectiveScan node per scan (plugin) or standard ops only (portable)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import EXIT_BAD_INPUT, fail, user_errors
from m2s2l_edge.cli.options import (
    Fp16,
    JsonOut,
    Overwrite,
    Plugin,
    Preset,
    Seed,
    Threads,
    Weights,
    check_distinct_paths,
    check_json_target,
    check_output_file,
    emit_json,
    json_to_stdout,
)

# Third-party loggers that narrate every optimisation pass at INFO; shown with --verbose only.
_CHATTY_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._export")


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def _quiet_exporter() -> None:
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in _CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


def _print_report(report, stderr: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"parity with {report.reference} ({report.precision}, {report.scan} scan via {report.scan_backend})")
    for col in ("inputs", "batch", "quantity", "max abs", "allowed", "rel", ""):
        table.add_column(col, justify="left" if col in ("inputs", "quantity") else "right")
    for r in report.rows:
        table.add_row(r.inputs, str(r.batch), r.quantity, f"{r.max_abs:.3g}", f"{r.allowed:.3g}", f"{r.rel:.3g}",
                      "ok" if r.ok else "[bold red]FAIL[/]")
    tol = report.tolerance
    table.caption = f"allowed = {tol.atol:g} + {tol.rtol:g} · max |torch|; rel = max abs / max |torch|"
    Console(stderr=stderr or not report.passed).print(table)


def export(
    weights: Weights = None,
    preset: Preset = None,
    seed: Seed = 0,
    scan: Annotated[str, typer.Option(
        help="plugin: one SelectiveScan node per scan (TensorRT plugin; ONNX Runtime runs it on our CPU kernel); "
             "portable: standard ONNX ops only.",
    )] = "plugin",
    fp16: Fp16 = False,
    batch: Annotated[int, typer.Option(
        "--batch", min=1, help="Fixed batch size (--dynamic makes the batch symbolic instead).")] = 1,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Symbolic batch dimension.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 18).")] = 18,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output .onnx (default m2s2l_<preset>_<scan>_<precision>_<batch>.onnx); metadata goes to "
                      "<out>.json.",
    )] = None,
    overwrite: Overwrite = False,
    output_format: Annotated[str, typer.Option(
        "--format", help="onnx, or engine: the ONNX, then a TensorRT engine of the export's precision (as `build`; "
        "--out names the engine, the ONNX goes beside it).")] = "onnx",
    plugin: Plugin = None,
    check: Annotated[bool, typer.Option(
        "--check/--no-check", help="Check parity with PyTorch in ONNX Runtime before publishing the file.")] = True,
    dataset: Annotated[str | None, typer.Option(
        help="Data set the weights were trained on, for λ (default: the checkpoint's).")] = None,
    lambda_: Annotated[float | None, typer.Option(
        "--lambda", help="Score weight λ of the frame PSNR (default: the paper's for --dataset, else 0.5).")] = None,
    threads: Threads = None,
    int8: Annotated[bool, typer.Option(
        "--int8", help="INT8 by explicit quantization: convolutions and linear layers in int8 (Q/DQ), the selective "
        "scans and their inputs in floating point, calibrated on --calibration-data.")] = False,
    calibration_data: Annotated[Path | None, typer.Option(
        "--calibration-data", help="Normal footage that calibrates --int8: a video, a frames folder, a folder of "
        "videos or a data set root (its training split).")] = None,
    json_out: JsonOut = None,
) -> None:
    """Export M²S²L to ONNX, with its metadata, and check it against PyTorch in ONNX Runtime."""
    err = json_to_stdout(json_out)  # '--json -': stdout carries the JSON only
    target: list[Path] = []  # the output, once known, for the interruption's note

    def kept() -> str:
        return f"nothing was written{f' to {target[0]}' if target else ''}"

    with user_errors(kept=kept):
        from m2s2l_edge.export.outputs import check_export_options, default_export_paths, export_paths

        check_export_options(output_format=output_format, weights=weights, preset=preset, plugin=plugin, int8=int8,
                             calibration_data=calibration_data, fp16=fp16, check=check,
                             report_wanted=json_out is not None)
        check_json_target(json_out)
        from m2s2l_edge.export.engine import check_build_ready, export_engine_config
        from m2s2l_edge.export.onnx_export import ExportConfig, load_source_model
        from m2s2l_edge.export.parity import ParityError
        from m2s2l_edge.export.run import export_model, failed_record

        config = ExportConfig(scan=scan, precision="fp16" if fp16 else "fp32", batch=batch, dynamic_batch=dynamic,
                              opset=opset)
        if out is not None:
            out, engine_out = _checked_outputs(export_paths(out, output_format), overwrite)
        engine_cfg = None
        if output_format == "engine":
            check_build_ready(scan, plugin)
            engine_cfg = export_engine_config(fp16=fp16, batch=batch, dynamic=dynamic, plugin=plugin)
        _quiet_exporter()
        model, source = load_source_model(weights, preset, seed)
        if out is None:
            out, engine_out = _checked_outputs(default_export_paths(
                model.cfg.name, output_format, scan=config.scan, precision=config.precision, batch=batch,
                dynamic=dynamic, int8=int8), overwrite)
        target.append(out)
        from m2s2l_edge.artifacts.metadata import sidecar_path

        check_distinct_paths({"--out": out, "metadata": sidecar_path(out), "--json": json_out, "engine": engine_out},
                             {"--weights": weights, "--calibration-data": calibration_data})
        try:
            result = export_model(model, out, config, calibration_data=calibration_data if int8 else None,
                                  source=source, dataset=dataset, lam=lambda_, check=check, threads=threads)
        except ParityError as e:
            _print_report(e.report)
            emit_json(failed_record(e.report), json_out)
            raise fail(f"{e}; nothing written to {out}", EXIT_BAD_INPUT) from None
    _print_written(result, config, int8, err)
    if engine_cfg is not None:
        from m2s2l_edge.export.engine import build_engine

        with user_errors(kept=lambda: f"kept {result.path}; no engine was written"):
            eng = build_engine(result.path, engine_out, engine_cfg)["engine"]
        typer.echo(f"wrote {engine_out} ({eng['precision']}, TensorRT {eng['tensorrt']}, {eng['gpu']}) and "
                   f"{engine_out.name}.json", err=err)
    if result.report is not None:
        with user_errors():
            emit_json(result.record(), json_out)


def _checked_outputs(paths: tuple[Path, Path | None], overwrite: bool) -> tuple[Path, Path | None]:
    """Up front, before the slow export: every file the export writes is writable and, without --overwrite, new."""
    from m2s2l_edge.export.outputs import written_files

    for path in written_files(*paths):
        check_output_file(path, overwrite=overwrite)
    return paths


def _print_written(result, config, int8: bool, err: bool) -> None:
    if result.report is not None:
        _print_report(result.report, stderr=err)
    path = result.path
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.name}.json: {config.scan} scan, "
               f"{'int8 (Q/DQ)' if int8 else config.precision}, batch {config.batch_label}, opset {config.opset}",
               err=err)
    if result.comparison is not None:
        agree, score = result.comparison["frame_pred_psnr_vs_fp32_db"], result.comparison["score_change_db"]
        typer.echo(f"INT8 against FP32 on {result.comparison['clips']} calibration clips: frame_pred "
                   f"{agree['mean']:.1f} dB (lowest {agree['min']:.1f}); fused score moved {score['mean']:.3f} dB on "
                   f"average, {score['max']:.3f} at most. Calibrate `watch` anew for this model: its scores differ.",
                   err=err)
