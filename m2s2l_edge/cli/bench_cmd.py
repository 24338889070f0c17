"""`m2s2l-edge bench`: latency and FPS of a checkpoint or fresh weights (PyTorch), an exported model (ONNX Runtime)
or a TensorRT engine (timed on the GPU with a CUDA graph like trtexec), all on one ``BenchConfig``
(``m2s2l_edge.runtime.bench``); `bench --all` puts every format of one model in one table (``m2s2l_edge.formats``).

The model option picks the backend (``options.model_source``); every result is summarised by
``m2s2l_edge.efficiency.benchmarking.format_summary``.
"""

from __future__ import annotations

from pathlib import Path
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
    ServedModel,
    Server,
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
    all_formats: Annotated[bool, typer.Option(
        "--all", help="Every format of --weights / --preset in one table: PyTorch (eager, inference), ONNX Runtime "
        "(portable, plugin, INT8), TensorRT FP16 / INT8 and Triton where present, timed interleaved.")] = False,
    data: Annotated[Path | None, typer.Option(
        "--data", help="--all: labelled footage to score with every format (frame AUC); its training split "
        "calibrates INT8 when --calibration-data is not given.")] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="--all: the frame labels of --data.")] = None,
    calibration_data: Annotated[Path | None, typer.Option(
        "--calibration-data", help="--all: normal footage that calibrates the INT8 format.")] = None,
    server: Server = None,
    model: ServedModel = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="--all: the table as Markdown to a file.")] = None,
    json_out: JsonOut = None,
) -> None:
    """Benchmark inference latency (mean / median / p90 / p99) and throughput, trtexec style."""
    if all_formats:
        _bench_all(weights=weights, onnx=onnx, engine=engine, preset=preset, seed=seed, plugin=plugin, batch=batch,
                   warmup=warmup, iterations=iterations, fp16=fp16, threads=threads, device=device, data=data,
                   labels=labels, calibration_data=calibration_data, server=server, model=model,
                   markdown=markdown, json_out=json_out)
        return
    err = json_to_stdout(json_out)  # '--json -': stdout carries the JSON only
    with user_errors():
        only_all = [flag for flag, value in (("--data", data), ("--labels", labels),
                                             ("--calibration-data", calibration_data), ("--server", server),
                                             ("--model", model), ("--markdown", markdown)) if value is not None]
        if only_all:
            raise ValueError(f"{', '.join(only_all)} go(es) with --all")
        check_json_target(json_out)
        source = model_source(weights=weights, onnx=onnx, engine=engine, preset=preset, seed=seed)
        from m2s2l_edge.runtime.bench import BenchConfig

        config = BenchConfig(batch=batch, warmup=warmup, iterations=iterations, seed=seed)
        if source.kind == "tensorrt":
            result, lines = _bench_engine(source, config, plugin=plugin, cuda_graph=cuda_graph, threads=threads,
                                          fp16=fp16, device=device)
        else:
            result, lines = _bench_model(source, config, plugin=plugin, fp16=fp16, threads=threads, device=device)
        typer.echo("\n".join(lines), err=err)
        emit_json(result, json_out)
    if json_out is not None and not err:
        typer.echo(f"wrote {json_out}")


def _bench_model(source, config, *, plugin, fp16: bool, threads, device) -> tuple[dict, list[str]]:
    """A checkpoint, fresh weights or an exported model, through its runtime backend."""
    if plugin is not None:
        raise ValueError("--plugin goes with --engine")
    if fp16 and source.kind != "torch":
        raise ValueError("--fp16 goes with --weights / --preset; an exported model carries its own precision")
    from m2s2l_edge.efficiency.benchmarking import format_summary
    from m2s2l_edge.runtime.bench import bench_backend

    backend = open_backend(source, device=device, threads=threads, **({"precision": "fp16"} if fp16 else {}))
    result = bench_backend(backend, config)
    result["source"] = source.label
    scan_path = backend.metadata.get("selective_scan")
    if scan_path:
        result["selective_scan"] = scan_path
    return result, [format_summary(result)] + ([scan_path] if scan_path else [])


def _bench_engine(source, config, *, plugin, cuda_graph: bool, threads, fp16: bool, device) -> tuple[dict, list[str]]:
    """A TensorRT engine, timed on the GPU with the same config as every backend."""
    from m2s2l_edge.cli.options import device_syntax

    others = [flag for flag, given in (("--threads", threads is not None), ("--fp16", fp16)) if given]
    if others:
        raise ValueError(f"--engine does not go with {', '.join(others)} (an engine carries its own settings)")
    from m2s2l_edge.efficiency.benchmarking import format_summary
    from m2s2l_edge.runtime.bench import bench_engine

    result = bench_engine(source.path, config, plugin=plugin, device=device_syntax(device, default="cuda"),
                          cuda_graph=cuda_graph)
    return result, [format_summary(result, title="TensorRT engine")]


def _bench_all(*, weights, onnx, engine, preset, seed, plugin, batch, warmup, iterations, fp16, threads, device, data,
               labels, calibration_data, server, model, markdown, json_out) -> None:
    """`bench --all`: every format of one model in one table (``m2s2l_edge.formats``)."""
    from m2s2l_edge.cli.options import check_output_file
    from m2s2l_edge.io import atomic_write_text

    err = json_to_stdout(json_out)
    with user_errors():
        if onnx is not None or engine is not None:
            raise ValueError("--all exports every format itself: give --weights CHECKPOINT or --preset NAME")
        if fp16:
            raise ValueError("--all times each format in its own precision; --fp16 does not apply")
        for flag, path in (("--data", data), ("--labels", labels), ("--calibration-data", calibration_data)):
            if path is not None and not path.exists():
                raise FileNotFoundError(f"{flag} {path} does not exist")
        check_json_target(json_out)
        if markdown is not None:
            check_output_file(markdown, overwrite=True, flag="--markdown")
        from m2s2l_edge.formats import CompareConfig, compare_formats, format_table, to_markdown

        cfg = CompareConfig(
            weights=str(weights) if weights else None, preset=preset, seed=seed, batch=batch or 1, threads=threads,
            warmup=warmup, iterations=iterations, device=device or "cpu",
            calibration_data=str(calibration_data) if calibration_data else None,
            data=str(data) if data else None, labels=str(labels) if labels else None, server=server,
            served_model=model, plugin=str(plugin) if plugin else None,
        )
        result = compare_formats(cfg, progress=lambda message: typer.echo(f"... {message}", err=True))
        typer.echo(format_table(result), err=err)
        if markdown is not None:
            atomic_write_text(markdown, to_markdown(result))
            typer.echo(f"wrote {markdown}", err=True)
        emit_json(result, json_out)
