"""`m2s2l-edge build`: ONNX → TensorRT engine (FP16 by default) with the SelectiveScan plugin."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors
from m2s2l_edge.cli.options import (
    JsonOut,
    Overwrite,
    Plugin,
    check_distinct_paths,
    check_json_target,
    check_output_file,
    emit_json,
    json_to_stdout,
)


def register(app: typer.Typer) -> None:
    app.command("build")(build)


def build(
    onnx: Annotated[Path, typer.Option("--onnx", help="Exported ONNX model (m2s2l-edge export).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Engine file (default: the ONNX with .engine); metadata goes to <out>.json.")] = None,
    overwrite: Overwrite = False,
    plugin: Plugin = None,
    fp16: Annotated[bool, typer.Option("--fp16/--fp32", help="FP16 engine (TensorRT 11: needs an FP16 ONNX, "
                                       "export --fp16) or FP32.")] = True,
    min_batch: Annotated[int, typer.Option(min=1, help="Smallest batch of the optimisation profile.")] = 1,
    batch: Annotated[int, typer.Option("--batch", min=1, help="The batch TensorRT tunes for.")] = 1,
    max_batch: Annotated[int, typer.Option(min=1, help="Largest batch of the optimisation profile.")] = 1,
    workspace: Annotated[int, typer.Option("--workspace", help="Builder workspace limit in MiB.")] = 1024,
    timing_cache: Annotated[Path | None, typer.Option(
        help="Timing cache file: read if it exists, written after the build (faster rebuilds).")] = None,
    json_out: JsonOut = None,
) -> None:
    """Build a TensorRT engine (and <engine>.json metadata) from an exported ONNX, on the GPU that will run it.
    TensorRT's own log is at VERBOSE with `m2s2l-edge --verbose build ...`."""
    err = json_to_stdout(json_out)  # '--json -': stdout carries the JSON only
    with user_errors():
        from m2s2l_edge.artifacts.metadata import sidecar_path
        from m2s2l_edge.cli.options import check_input_file
        from m2s2l_edge.export.engine import EngineConfig, build_engine
        from m2s2l_edge.export.outputs import default_engine_path

        verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
        cfg = EngineConfig(fp16=fp16, min_batch=min_batch, opt_batch=batch, max_batch=max_batch,
                           workspace_mib=workspace, timing_cache=timing_cache, plugin=plugin, verbose=verbose)
        check_input_file(onnx, "--onnx")
        out = out if out is not None else default_engine_path(onnx)
        for path in (out, sidecar_path(out)):
            check_output_file(path, overwrite=overwrite)
        if timing_cache is not None:
            check_output_file(timing_cache, overwrite=True, flag="--timing-cache")
        check_json_target(json_out)
        check_distinct_paths({"--out": out, "metadata": sidecar_path(out), "--json": json_out,
                              "--timing-cache": timing_cache}, {"--onnx": onnx})
        meta = build_engine(onnx, out, cfg)
        eng = meta["engine"]
        typer.echo(f"wrote {out} ({eng['precision']}, TensorRT {eng['tensorrt']}, {eng['gpu']}) and {out.name}.json",
                   err=err)
        emit_json({"engine": str(out), **meta}, json_out)
