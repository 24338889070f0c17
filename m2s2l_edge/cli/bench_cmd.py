"""`m2s2l-edge bench`: latency and FPS of a checkpoint or fresh weights (PyTorch), an exported model (ONNX Runtime)
or a TensorRT engine (timed on the GPU by ``m2s2l_edge.runtime.tensorrt_backend.bench_engine``, with a CUDA graph
like trtexec).

The model option picks the backend (``options.model_source``); every backend is timed and summarised by
``m2s2l_edge.efficiency.benchmarking`` (``runtime.bench`` for the backends,
``runtime.tensorrt_backend.bench_engine`` on the GPU).
"""

from __future__ import annotations

from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors
from m2s2l_edge.cli.options import (
    DEFAULT_ITERATIONS,
    DEFAULT_WARMUP,
    Batch,
    Device,
    Engine,
    Fp16,
    Iterations,
    JsonOut,
    Onnx,
    Plugin,
    Preset,
    Seed,
    Threads,
    Warmup,
    Weights,
    check_json_target,
    emit_json,
    json_to_stdout,
    model_source,
    open_backend,
)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    weights: Weights = None,
    onnx: Onnx = None,
    engine: Engine = None,
    preset: Preset = None,
    seed: Seed = 0,
    plugin: Plugin = None,
    cuda_graph: Annotated[bool, typer.Option(
        "--cuda-graph/--no-cuda-graph", help="--engine: also time the enqueue replayed from a CUDA graph.")] = True,
    batch: Batch = None,
    warmup: Warmup = DEFAULT_WARMUP,
    iterations: Iterations = DEFAULT_ITERATIONS,
    fp16: Fp16 = False,
    threads: Threads = None,
    device: Device = None,
    json_out: JsonOut = None,
) -> None:
    """Benchmark inference latency (mean / median / p90 / p99) and throughput, trtexec style."""
    err = json_to_stdout(json_out)  # '--json -': stdout carries the JSON only
    with user_errors():
        check_json_target(json_out)
        source = model_source(weights=weights, onnx=onnx, engine=engine, preset=preset, seed=seed)
        if source.kind == "tensorrt":
            result, lines = _bench_engine(source.path, plugin, cuda_graph, threads, fp16, batch, warmup, iterations,
                                          device)
        else:
            if plugin is not None:
                raise ValueError("--plugin goes with --engine")
            if fp16 and source.kind != "torch":
                raise ValueError("--fp16 goes with --weights / --preset; an exported model carries its own precision")
            from m2s2l_edge.efficiency.benchmarking import format_summary
            from m2s2l_edge.runtime.bench import BenchConfig, bench_backend

            config = BenchConfig(batch=batch, warmup=warmup, iterations=iterations, seed=seed)
            options = {"precision": "fp16"} if fp16 else {}
            backend = open_backend(source, device=device, threads=threads, **options)
            result = bench_backend(backend, config)
            result["source"] = source.label
            scan_path = backend.metadata.get("selective_scan")
            if scan_path:
                result["selective_scan"] = scan_path
            lines = [format_summary(result)] + ([scan_path] if scan_path else [])
        typer.echo("\n".join(lines), err=err)
        emit_json(result, json_out)
    if json_out is not None and not err:
        typer.echo(f"wrote {json_out}")


def _bench_engine(engine, plugin, cuda_graph: bool, threads, fp16: bool, batch, warmup: int, iterations: int,
                  device) -> tuple[dict, list[str]]:
    from m2s2l_edge.cli.options import device_syntax

    others = [flag for flag, given in (("--threads", threads is not None), ("--fp16", fp16)) if given]
    if others:
        raise ValueError(f"--engine does not go with {', '.join(others)} (an engine carries its own settings)")
    from m2s2l_edge.efficiency.benchmarking import format_summary
    from m2s2l_edge.runtime.tensorrt_backend import bench_engine

    result = bench_engine(engine, plugin=plugin, device=device_syntax(device, default="cuda"), batch=batch,
                          warmup=warmup, iterations=iterations, cuda_graph=cuda_graph)
    return result, [format_summary(result, title="TensorRT engine")]
