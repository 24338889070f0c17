"""Latency of any runtime backend on random clips; ``m2s2l_edge.efficiency.benchmarking.format_summary`` prints the
result like trtexec's "Performance summary".

Used by `m2s2l-edge bench` and benchmarks/; a new backend needs nothing here beyond the ``Backend`` interface
(``run`` returns host arrays, so timing ``run`` includes any device synchronisation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class BenchConfig:
    """``batch`` None: the model's fixed batch, or 1 for a dynamic one."""

    batch: int | None = None
    warmup: int = 10
    iterations: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch is not None and self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")


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
    clips = np.random.default_rng(config.seed).uniform(-1, 1, shape).astype(np.float32)
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

