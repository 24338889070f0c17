"""`m2s2l-edge serve triton-repo`: a Triton Inference Server model repository from an export (and its engine);
`m2s2l-edge serve local`: a tritonserver on 127.0.0.1 serving such a repository, to try `watch --server` against."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import EXIT_INTERRUPTED, fail, user_errors
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


@serve_app.command("local")
def local(
    repo: Annotated[Path, typer.Option("--repo", help="The model repository to serve (serve triton-repo --out).")],
    model: Annotated[str | None, typer.Option(
        "--model", help="The model of --repo to load (default m2s2l_python: the nvidia-pytriton server has the "
        "Python backend only).")] = None,
    http_port: Annotated[int, typer.Option("--http-port", min=1, max=65535, help="HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", min=1, max=65535, help="gRPC port.")] = 8001,
) -> None:
    """Start tritonserver (nvidia-pytriton's, from `make triton-env` or $M2S2L_TRITON_VENV) on 127.0.0.1 with a model
    repository and print the URLs for `watch --server`; Ctrl-C or SIGTERM stops it."""
    import shutil

    from m2s2l_edge.serve.local_server import local_server
    from m2s2l_edge.serve.triton_repo import PYTHON_MODEL
    from m2s2l_edge.watch.service import StoppedDuringStartup, stop_on_signals

    server = None
    try:
        with user_errors(), stop_on_signals(interrupt_startup=True) as stops:
            server = local_server(repo, model, default_model=PYTHON_MODEL, http_port=http_port, grpc_port=grpc_port)
            typer.echo(f"starting tritonserver with {', '.join(server.models)} from {repo} (log: {server.log_path})")
            try:
                server.start()
                stops.running()
                typer.echo(f"serving {', '.join(server.models)}: {server.grpc_url} and {server.http_url}")
                typer.echo(f"try: m2s2l-edge watch --server {server.grpc_url} --model {server.models[0]} "
                           "--source VIDEO")
                typer.echo("Ctrl-C stops it")
                server.wait(stops.event)
            finally:
                server.stop()  # also when a signal or an error ends the start: the server has its own session
    except StoppedDuringStartup as e:
        if server is not None:
            shutil.rmtree(server.workdir, ignore_errors=True)
        if e.signal_name == "SIGINT":
            raise fail("interrupted during start-up; tritonserver stopped", EXIT_INTERRUPTED) from None
        typer.echo(f"stopped by {e.signal_name} during start-up; tritonserver stopped", err=True)
        return
    shutil.rmtree(server.workdir, ignore_errors=True)  # kept only where the server failed: its log names why
    if stops.seen[0] == "SIGINT":
        raise fail("interrupted; tritonserver stopped", EXIT_INTERRUPTED)
    typer.echo(f"stopped by {stops.seen[0]}; tritonserver stopped", err=True)
