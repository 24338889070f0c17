"""Latency of a runtime backend on random clips, one ``BenchConfig`` for every kind:
``bench_backend`` times ``Backend.run`` (host arrays in and out, so any device synchronisation is inside the time),
``bench_engine`` times a TensorRT engine's enqueue on clips that stay on the GPU (like ``trtexec
--noDataTransfers``), with a CUDA-graph replay beside it. Both draw the same clips for the same seed, take their
timers and machine record from ``m2s2l_edge.efficiency.benchmarking``, and ``format_summary`` there prints either
result like trtexec's "Performance summary".

Used by `m2s2l-edge bench` and benchmarks/; a new backend needs nothing here beyond the ``Backend`` interface.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import numpy as np

from m2s2l_edge.efficiency.benchmarking import DEFAULT_ITERATIONS, DEFAULT_WARMUP

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchConfig:
    """``batch`` None: the model's fixed batch, or 1 for a dynamic one (an engine: its profile's opt batch)."""

    batch: int | None = None
    warmup: int = DEFAULT_WARMUP
    iterations: int = DEFAULT_ITERATIONS
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")


def random_clips(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The clips every benchmark times: uniform in [-1, 1] (the models' input range), float32, from ``seed``."""
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def bench_batch(backend, requested: int | None) -> int:
    """The batch to time: ``requested``, checked against a model exported with a fixed batch."""
    first = backend.inputs[0].shape[0]
    if isinstance(first, int):
        if requested is not None and requested != first:
            raise ValueError(f"the model was exported with batch {first}; bench it with --batch {first} or export "
                             "with --dynamic")
        return first
    return requested or 1


def bench_backend(backend, config: BenchConfig = BenchConfig()) -> dict:  # noqa: B008 - frozen, immutable
    """Time ``backend.run`` on one batch of random clips in [-1, 1]; returns a JSON-ready dict."""
    from m2s2l_edge.efficiency.benchmarking import load_average, machine_info, time_callable

    batch = bench_batch(backend, config.batch)
    spec = backend.inputs[0]
    shape = (batch, *spec.shape[1:])
    clips = random_clips(shape, config.seed)
    load_before = load_average()
    stats = time_callable(lambda: backend.run(clips), warmup=config.warmup, iterations=config.iterations,
                          batch=batch)
    meta = backend.metadata
    return {
        "backend": backend.name,
        "model": {k: meta.get(k)
                  for k in ("preset", "scan", "precision", "batch", "weights", "image_size", "clip_len")},
        "providers": meta.get("providers"),
        "input": {"name": spec.name, "shape": list(shape), "dtype": spec.dtype},
        "config": asdict(config) | {"batch": batch},
        "threads": getattr(backend, "threads", None),
        "latency": stats.as_dict(),
        "load_average": {"before": load_before, "after": load_average()},
        "machine": machine_info(),
    }


def bench_engine(
    engine_path: str | os.PathLike,
    config: BenchConfig = BenchConfig(),  # noqa: B008 - frozen, immutable
    *,
    plugin: str | os.PathLike | None = None,
    device: str = "cuda",
    cuda_graph: bool = True,
) -> dict:
    """Time a TensorRT engine on the GPU at ``config.batch`` (None: the batch the engine was tuned for, its
    profile's opt batch); the clips are copied to the GPU once and stay there.

    Rows: ``enqueue`` (execute_async_v3 per inference) and, with ``cuda_graph``, ``cuda-graph`` (the enqueue captured
    once and replayed, which removes the launch overhead that dominates small batches). A capture that fails (an engine
    with operations not allowed during capture) is reported in its row and logged, as trtexec does.
    Returns a JSON-ready dict: rows, engine, TensorRT version, GPU and, on a Jetson, power mode and clocks.
    """
    import torch

    from m2s2l_edge.efficiency.benchmarking import load_average, machine_info, time_cuda_launches
    from m2s2l_edge.runtime.gpu_probes import gpu_info, jetson_info
    from m2s2l_edge.runtime.tensorrt_backend import TensorRTBackend, torch_dtype

    load_before = load_average()
    backend = TensorRTBackend(engine_path, plugin=plugin, device=device)
    batch = int(backend.profile[1][0]) if config.batch is None else config.batch
    backend.check_batch(batch)
    (spec_in,) = backend.inputs
    shape = (batch, *spec_in.shape[1:])
    stream = backend.stream
    with torch.cuda.device(backend.device), torch.cuda.stream(stream):
        clips = torch.from_numpy(random_clips(shape, config.seed)).to(
            backend.device, dtype=torch_dtype(np.dtype(spec_in.dtype)))
        outputs = backend.bind(clips)  # addresses stay fixed for every launch and the graph below
        # TensorRT finishes lazy initialisation in the first enqueue; it must not happen inside a graph capture.
        backend.enqueue()
        stream.synchronize()
        rows = [{"mode": "enqueue", **time_cuda_launches(backend.enqueue, stream, warmup=config.warmup,
                                                         iterations=config.iterations, batch=batch)}]
        if cuda_graph:
            rows.append({"mode": "cuda-graph", **_bench_graph(backend, config, batch)})
    del outputs
    return {
        "engine": str(engine_path),
        "input": {"name": spec_in.name, "shape": list(shape), "dtype": spec_in.dtype},
        "profile": [list(s) for s in backend.profile],
        "batch": batch,
        "config": asdict(config) | {"batch": batch},
        "tensorrt": backend.tensorrt_version,
        **gpu_info(backend.device.index or 0),
        "jetson": jetson_info(),
        "engine_metadata": backend.metadata.get("engine", {}),
        "rows": rows,
        "machine": machine_info(),
        "load_average": {"before": load_before, "after": load_average()},
    }


def _bench_graph(backend, config: BenchConfig, batch: int) -> dict:
    from m2s2l_edge.efficiency.benchmarking import capture_cuda_graph, time_cuda_launches

    try:
        # No warm-up inside: bench_engine enqueued once already (TensorRT's lazy initialisation must not be captured).
        # thread_local capture, as trtexec: another thread's CUDA calls do not invalidate the capture.
        graph = capture_cuda_graph(backend.enqueue, stream=backend.stream, warmup=0, error_mode="thread_local")
    except RuntimeError as e:
        logger.warning("CUDA graph capture of the TensorRT enqueue failed (%s); timed without a graph only", e)
        return {"error": f"capture failed: {e}"}

    def replay() -> None:
        graph.replay()  # launches on the current stream, which is backend.stream here

    return time_cuda_launches(replay, backend.stream, warmup=config.warmup, iterations=config.iterations,
                              batch=batch)
