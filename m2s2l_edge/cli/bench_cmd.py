"""`m2s2l-edge bench`: latency and FPS of an exported model (ONNX Runtime), of the PyTorch model or of a TensorRT
engine (timed on the GPU by ``m2s2l_edge.runtime.tensorrt_backend.bench_engine``, with a CUDA graph like trtexec).

Every source is a runtime backend (``m2s2l_edge.runtime.create_backend``) timed by ``m2s2l_edge.runtime.bench``;
a new source is one more option and one more entry in ``_open_backend``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def _open_backend(onnx: Path | None, torch_: bool, weights: Path | None, preset: str | None, seed: int,
                  device: str | None, threads: int | None, python_scan: bool):
    from m2s2l_edge.runtime import create_backend

    chosen = [name for name, on in (("--onnx", onnx is not None), ("--torch", torch_)) if on]
    if len(chosen) != 1:
        raise ValueError("choose one model source: --onnx MODEL.onnx, or --torch with --preset NAME / --weights CKPT"
                         + (f" (got {' and '.join(chosen)})" if chosen else ""))
    if onnx is not None:
        if weights is not None or preset is not None:
            raise ValueError("--weights / --preset go with --torch; an exported model carries its own config")
        return create_backend("onnxruntime", onnx, device=device, threads=threads, python_scan=python_scan)
    if weights is None and preset is None:
        raise ValueError("--torch needs --preset NAME (fresh weights) or --weights CHECKPOINT")
    return create_backend("torch", weights, device=device, threads=threads, preset=preset, seed=seed)


def _bench_engine(engine: Path, plugin: Path | None, cuda_graph: bool, others: list[str], batch: int | None,
                  warmup: int, iterations: int, device: str | None, json_out: Path | None) -> None:
    from m2s2l_edge.benchmarking import format_summary
    from m2s2l_edge.runtime.tensorrt_backend import bench_engine

    if others:
        raise ValueError(f"--engine does not go with {', '.join(others)} (an engine carries its own model)")
    result = bench_engine(engine, plugin=plugin, device=device or "cuda", batch=batch, warmup=warmup,
                          iterations=iterations, cuda_graph=cuda_graph)
    text = json.dumps(result, indent=2)
    if json_out is not None and str(json_out) == "-":
        typer.echo(text)
        return
    typer.echo(format_summary(result, title="TensorRT engine"))
    if json_out is not None:
        from m2s2l_edge.io import atomic_write_text

        atomic_write_text(json_out, text + "\n")
        typer.echo(f"wrote {json_out}")


def bench(
    onnx: Annotated[Path | None, typer.Option(help="Exported ONNX model, run in ONNX Runtime.")] = None,
    engine: Annotated[Path | None, typer.Option(
        help="TensorRT engine (m2s2l-edge build), timed on the GPU with its inputs kept there.")] = None,
    plugin: Annotated[Path | None, typer.Option(
        help="--engine: libm2s2l_plugins.so (default: $M2S2L_PLUGIN_LIB, the build's, plugins/build/).")] = None,
    cuda_graph: Annotated[bool, typer.Option(
        "--cuda-graph/--no-cuda-graph", help="--engine: also time the enqueue replayed from a CUDA graph.")] = True,
    torch_: Annotated[bool, typer.Option("--torch", help="Time the PyTorch model (eager) instead.")] = False,
    weights: Annotated[Path | None, typer.Option(help="Checkpoint for --torch.")] = None,
    preset: Annotated[str | None, typer.Option(help="Preset for --torch (fresh weights; checks --weights).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fresh weights of --preset.")] = 0,
    batch: Annotated[int | None, typer.Option(help="Batch size (default: the model's, or 1).")] = None,
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = 10,
    iterations: Annotated[int, typer.Option(help="Timed runs.")] = 50,
    threads: Annotated[int | None, typer.Option(help="Intra-op CPU threads (default: the library's).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default cpu).")] = None,
    python_scan: Annotated[bool, typer.Option(
        "--python-scan", help="Run a plugin-flavour ONNX's SelectiveScan nodes as Python ops (slow; checks).")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON ('-' for stdout).")] = None,
) -> None:
    """Benchmark inference latency (mean / median / p90 / p99) and throughput, trtexec style."""
    with user_errors():
        if engine is not None:
            others = [flag for flag, given in (("--onnx", onnx), ("--torch", torch_), ("--weights", weights),
                                               ("--preset", preset), ("--threads", threads),
                                               ("--python-scan", python_scan)) if given]
            return _bench_engine(engine, plugin, cuda_graph, others, batch, warmup, iterations, device, json_out)
        if plugin is not None:
            raise ValueError("--plugin goes with --engine")
        from m2s2l_edge.benchmarking import format_summary
        from m2s2l_edge.runtime.bench import BenchConfig, bench_backend

        config = BenchConfig(batch=batch, warmup=warmup, iterations=iterations)
        if threads is not None and threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        backend = _open_backend(onnx, torch_, weights, preset, seed, device, threads, python_scan)
        result = bench_backend(backend, config)
        result["source"] = str(onnx) if onnx is not None else (str(weights) if weights else f"preset {preset}")
        text = json.dumps(result, indent=2)
        if json_out is not None and str(json_out) == "-":
            typer.echo(text)
            return
        typer.echo(format_summary(result))
        if json_out is not None:
            from m2s2l_edge.io import atomic_write_text

            atomic_write_text(json_out, text + "\n")
            typer.echo(f"wrote {json_out}")
