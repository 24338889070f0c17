"""Latency statistics and machine description shared by `m2s2l-edge bench`, `profile --fps` and benchmarks/."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one call in milliseconds over ``iterations`` timed calls, and the frames per second it implies."""

    iterations: int
    batch: int
    mean_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float

    @property
    def fps(self) -> float:
        return 1000.0 * self.batch / self.median_ms

    def as_dict(self) -> dict:
        return {**asdict(self), "fps": self.fps}


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    # Linear interpolation between closest ranks (numpy's default), without importing numpy here.
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize_latencies(times_ms: Sequence[float], batch: int) -> LatencyStats:
    if not times_ms:
        raise ValueError("no timings to summarise: iterations must be >= 1")
    s = sorted(times_ms)
    return LatencyStats(
        iterations=len(s),
        batch=batch,
        mean_ms=statistics.fmean(s),
        median_ms=statistics.median(s),
        p90_ms=_percentile(s, 0.90),
        p99_ms=_percentile(s, 0.99),
        min_ms=s[0],
        max_ms=s[-1],
    )


def time_callable(
    fn: Callable[[], object],
    *,
    warmup: int,
    iterations: int,
    batch: int,
    synchronize: Callable[[], None] | None = None,
) -> LatencyStats:
    """Time ``fn`` after ``warmup`` untimed calls; ``synchronize`` (e.g. torch.cuda.synchronize) runs around each."""
    import time

    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000.0)
    return summarize_latencies(times, batch)


def machine_info() -> dict:
    """The machine and library versions a benchmark result depends on (only already-importable libraries)."""
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import importlib.metadata as md

    for pkg in ("torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info
