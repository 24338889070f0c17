"""`m2s2l-edge build`: ONNX → TensorRT engine (FP16 by default) with the SelectiveScan plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors


def register(app: typer.Typer) -> None:
    app.command("build")(build)


def build(
    onnx: Annotated[Path, typer.Option("--onnx", help="Exported ONNX model (m2s2l-edge export).")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Engine file (default: the ONNX with .engine).")] = None,
    plugin: Annotated[Path | None, typer.Option(
        help="libm2s2l_plugins.so (default: $M2S2L_PLUGIN_LIB, else plugins/build/).")] = None,
    fp16: Annotated[bool, typer.Option("--fp16/--no-fp16", help="FP16 engine (TensorRT 11: needs an FP16 ONNX, "
                                       "export --half).")] = True,
    min_batch: Annotated[int, typer.Option(help="Smallest batch of the optimisation profile.")] = 1,
    opt_batch: Annotated[int, typer.Option(help="Batch TensorRT tunes for.")] = 1,
    max_batch: Annotated[int, typer.Option(help="Largest batch of the optimisation profile.")] = 1,
    workspace: Annotated[int, typer.Option("--workspace", help="Builder workspace limit in MiB.")] = 1024,
    timing_cache: Annotated[Path | None, typer.Option(
        help="Timing cache file: read if it exists, written after the build (faster rebuilds).")] = None,
    verbose_trt: Annotated[bool, typer.Option("--verbose-trt", help="TensorRT's log at VERBOSE.")] = False,
) -> None:
    """Build a TensorRT engine (and <engine>.json metadata) from an exported ONNX, on the GPU that will run it."""
    from m2s2l_edge.export.engine import EngineConfig, build_engine

    with user_errors():
        cfg = EngineConfig(fp16=fp16, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
                           workspace_mib=workspace, timing_cache=timing_cache, plugin=plugin, verbose=verbose_trt)
        out = out if out is not None else onnx.with_suffix(".engine")
        meta = build_engine(onnx, out, cfg)
    eng = meta["engine"]
    typer.echo(f"wrote {out} ({eng['precision']}, TensorRT {eng['tensorrt']}, {eng['gpu']}) and {out.name}.json")
