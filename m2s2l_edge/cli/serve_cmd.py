"""`m2s2l-edge serve triton-repo`: a Triton Inference Server model repository from an export (and its engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors
from m2s2l_edge.cli.options import Batch, Device, Engine, Onnx, Overwrite, Plugin, Threads

serve_app = typer.Typer(help="Serve exported models with NVIDIA Triton Inference Server.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")


@serve_app.command("triton-repo")
def triton_repo(
    onnx: Onnx = None,
    engine: Engine = None,
    out: Annotated[Path | None, typer.Option("--out", help="The model repository folder to write.")] = None,
    plugin: Plugin = None,
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="A calibration file (m2s2l-edge calibrate), carried in the models' parameters.")] = None,
    batch: Batch = None,
    device: Device = None,
    threads: Threads = None,
    overwrite: Overwrite = False,
) -> None:
    """Write a Triton model repository: onnxruntime (portable ONNX), python (our ONNX Runtime runner) and, with
    --engine, tensorrt_plan models, with dynamic batching and the export's metadata; prints the server command."""
    with user_errors():
        from m2s2l_edge.cli.options import check_input_file, check_output_dir, device_syntax

        if onnx is None:
            raise ValueError("--onnx MODEL.onnx is required (the engine, if any, is served beside it)")
        if out is None:
            raise ValueError("--out REPO is required (the model repository folder to write)")
        if out.exists() and not overwrite:
            raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it")
        check_output_dir(out, overwrite=True)
        check_input_file(onnx, "--onnx")
        if engine is not None:
            check_input_file(engine, "--engine")
        from m2s2l_edge.serve.triton_repo import RepoConfig, write_repository

        config = RepoConfig(max_batch=batch, device=None if device is None else device_syntax(device),
                            threads=threads)
        summary = write_repository(out, onnx, engine=engine, plugin=plugin, calibration=calibration, config=config,
                                   overwrite=overwrite)
        typer.echo(f"wrote {out}: models {', '.join(summary['models'])}")
        typer.echo("serve it with:")
        typer.echo("  " + " ".join(summary["command"]))
