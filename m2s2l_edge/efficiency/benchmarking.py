"""Timing, latency statistics, the machine record and the one summary formatter of every benchmark in this project.

Used by `m2s2l-edge bench` (every backend and the TensorRT engine: ``runtime.bench``), `m2s2l-edge profile
--fps` (``profile.time_forward``) and the scripts in benchmarks/. Timers synchronise the device they time:
``time_callable`` with a synchronisation callable (``synchronizer(device)``: ``torch.cuda.synchronize`` on CUDA),
``time_cuda_launches`` and ``time_per_call`` with CUDA events on a stream, so a GPU's asynchronous launches are never
timed as if they were finished work. torch is imported only inside the functions that time CUDA work.

A result that ``format_summary`` reads is a dict with ``rows`` (each ``{"mode", "latency": LatencyStats.as_dict(),
"gpu_compute"?, "throughput_qps"?, "throughput_fps"?, "error"?}``) or a single ``latency``, plus what describes the
setting: ``backend``/``providers``/``model``, ``tensorrt``/``gpu``/``compute_capability``/``engine``/``jetson``,
``input``, ``config`` (``warmup``, ``iterations``) or top-level ``warmup``/``iterations``, ``threads``, ``machine``
and ``load_average``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

# The warm-up and timed runs of every benchmark unless told otherwise (`bench`, `profile --fps`, `table --fps`, the
# backend and engine benchmarks): enough for a stable median on a CPU in seconds, not minutes.
DEFAULT_WARMUP = 10
DEFAULT_ITERATIONS = 50


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


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ascending ``sorted_values``: linear interpolation between closest ranks (numpy's
    default), without importing numpy here."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _check_counts(warmup: int, iterations: int) -> None:
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")


def summarize_latencies(times_ms: Sequence[float], batch: int) -> LatencyStats:
    if not times_ms:
        raise ValueError("no timings to summarise: iterations must be >= 1")
    s = sorted(times_ms)
    return LatencyStats(
        iterations=len(s),
        batch=batch,
        mean_ms=statistics.fmean(s),
        median_ms=statistics.median(s),
        p90_ms=percentile(s, 0.90),
        p99_ms=percentile(s, 0.99),
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
    on_call: Callable[[int, int], None] | None = None,
) -> LatencyStats:
    """Time ``fn`` after ``warmup`` untimed calls (``time.perf_counter``, milliseconds); ``synchronize`` (e.g.
    ``synchronizer("cuda")``) runs after the warm-up and after each timed call, so asynchronous device work is inside
    the time of the call that launched it. ``on_call(done, total)`` after every call, warm-up included (progress);
    it runs outside the timed span."""
    _check_counts(warmup, iterations)
    sync = synchronize or (lambda: None)
    report = on_call or (lambda done, total: None)
    total = warmup + iterations
    for i in range(warmup):
        fn()
        report(i + 1, total)
    sync()
    times = []
    for i in range(iterations):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000.0)
        report(warmup + i + 1, total)
    return summarize_latencies(times, batch)


def synchronizer(device) -> Callable[[], None] | None:
    """What ``time_callable`` must call to wait for ``device`` ("cpu", "cuda", "cuda:N" or a torch.device): None on
    the CPU (work is done when the call returns), ``torch.cuda.synchronize(device)`` on CUDA."""
    if str(device).split(":")[0] != "cuda":
        return None
    import torch

    dev = torch.device(device)
    return lambda: torch.cuda.synchronize(dev)


def time_cuda_launches(launch: Callable[[], None], stream, *, warmup: int, iterations: int, batch: int) -> dict:
    """Host latency (launch to completion; trtexec's "Latency" without transfers) and GPU time (CUDA events recorded
    on ``stream``; trtexec's "GPU Compute Time") of ``iterations`` launches after ``warmup`` untimed ones.

    Returns ``{"latency", "gpu_compute", "throughput_qps", "throughput_fps"}``, the stats as ``LatencyStats.as_dict()``.
    """
    import torch

    _check_counts(warmup, iterations)
    for _ in range(warmup):
        launch()
    stream.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    host, gpu = [], []
    t_begin = time.perf_counter()
    for _ in range(iterations):
        t0 = time.perf_counter()
        start.record(stream)
        launch()
        end.record(stream)
        end.synchronize()
        host.append((time.perf_counter() - t0) * 1000.0)
        gpu.append(start.elapsed_time(end))
    total_s = time.perf_counter() - t_begin
    return {
        "latency": summarize_latencies(host, batch).as_dict(),
        "gpu_compute": summarize_latencies(gpu, batch).as_dict(),
        "throughput_qps": iterations / total_s,
        "throughput_fps": iterations * batch / total_s,
    }


def time_per_call(fn: Callable[[], object], device, *, min_iters: int = 10, budget_s: float = 0.5,
                  repeats: int = 5) -> float:
    """Median milliseconds per call of back-to-back calls (what a Python caller sees), for calls too short to time
    one by one (a single scan kernel): after one warm-up call, about ``budget_s`` of calls (at least ``min_iters``,
    at most 200) in ``repeats`` groups, each group timed by CUDA events on the current stream (on CUDA) or
    ``time.perf_counter`` (on the CPU)."""
    sync = synchronizer(device) or (lambda: None)
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    single = max(time.perf_counter() - t0, 1e-6)
    iters = max(min_iters, min(200, int(budget_s / single)))
    n_reps = min(repeats, iters)
    per = max(1, iters // n_reps)
    reps = []
    for _ in range(n_reps):
        if synchronizer(device) is not None:
            import torch

            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(per):
                fn()
            end.record()
            end.synchronize()
            reps.append(start.elapsed_time(end) / per)
        else:
            t0 = time.perf_counter()
            for _ in range(per):
                fn()
            reps.append((time.perf_counter() - t0) * 1000.0 / per)
    return statistics.median(reps)


def capture_cuda_graph(fn: Callable[[], object], *, stream=None, warmup: int = 3, error_mode: str = "global"):
    """A ``torch.cuda.CUDAGraph`` holding one call of ``fn`` (on static buffers: what ``fn`` reads and writes must
    stay allocated); ``graph.replay()`` reruns it without Python or launch overhead.

    ``warmup`` calls run first on a side stream (PyTorch's recipe: lazy initialisation and allocator warm-up must
    not happen during capture). ``stream``: the capture stream (None: PyTorch's own side stream). ``error_mode``:
    ``capture_error_mode`` of ``torch.cuda.graph`` ("thread_local" lets other threads' CUDA calls go on, as
    trtexec does). Raises RuntimeError when capture fails (an operation not allowed during capture).
    """
    import torch

    if warmup:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream, capture_error_mode=error_mode):
        fn()
    return graph


def time_cuda_graph(fn: Callable[[], object], *, calls_per_graph: int = 10, replays: int = 20,
                    repeats: int = 5) -> float:
    """Median milliseconds per call of ``fn`` replayed from a CUDA graph (``calls_per_graph`` calls captured once,
    the graph replayed ``replays`` times per CUDA-event measurement, ``repeats`` measurements): GPU time without
    Python or launch overhead. CUDA only."""
    import torch

    def calls() -> None:
        for _ in range(calls_per_graph):
            fn()

    graph = capture_cuda_graph(calls)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / (replays * calls_per_graph))
    return statistics.median(times)


def time_interleaved(fns: Mapping[str, Callable[[], object]], *, warmup: int, iterations: int,
                     batch: int) -> dict[str, LatencyStats]:
    """Time several callables interleaved, in alternating order (A B, B A, A B, ...), so a change of machine load
    during the run hits all of them alike and none always runs first; each is warmed up first. Returns LatencyStats
    per name (CPU work: ``time.perf_counter``)."""
    _check_counts(warmup, iterations)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for i in range(iterations):
        for name in names if i % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: summarize_latencies(t, batch) for name, t in times.items()}


def write_json(path: str | os.PathLike, result: Mapping) -> None:
    """A benchmark's result as indented JSON at ``path`` (its folder made), written atomically: a killed run leaves
    the previous file, never half of one. Values JSON cannot hold are written as their ``str``."""
    import json
    from pathlib import Path

    from m2s2l_edge.io import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2, default=str) + "\n")


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none): shared machines make timings noisy."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


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


def format_stats(s: Mapping) -> str:
    """One line of latency statistics (a ``LatencyStats.as_dict()``), trtexec's wording."""
    return (f"min = {s['min_ms']:.3f} ms, max = {s['max_ms']:.3f} ms, mean = {s['mean_ms']:.3f} ms, "
            f"median = {s['median_ms']:.3f} ms, percentile(90%) = {s['p90_ms']:.3f} ms, "
            f"percentile(99%) = {s['p99_ms']:.3f} ms")


def _setting_lines(result: Mapping) -> list[str]:
    lines = []
    if result.get("backend"):
        model = result.get("model") or {}
        described = ", ".join(str(model[k]) for k in ("preset", "scan", "precision") if model.get(k))
        providers = result.get("providers")
        lines.append(f"Backend: {result['backend']}" + (f" ({', '.join(providers)})" if providers else "")
                     + (f", model {described}" if described else ""))
    if result.get("tensorrt"):
        lines.append(f"TensorRT {result['tensorrt']} on {result.get('gpu', '?')} "
                     f"(sm {result.get('compute_capability', '?')})"
                     + (f", engine {result['engine']}" if result.get("engine") else ""))
    jetson = result.get("jetson")
    if jetson:
        lines.append(f"Jetson {jetson['l4t_release']}: power mode {jetson['power_mode']}, "
                     f"jetson_clocks {jetson['jetson_clocks']}")
    if result.get("device"):
        lines.append(f"Device: {result['device']}")
    inp = result.get("input")
    if inp:
        lines.append(f"Input: {inp['name']} {tuple(inp['shape'])} {inp['dtype']}")
    return lines


def format_summary(result: Mapping, title: str | None = None) -> str:
    """trtexec-style text of a benchmark result (schema in the module docstring): what was timed, then per row the
    throughput, the host latency and, for GPU rows, the GPU compute time, then the counts and the machine."""
    rows = result.get("rows")
    named = rows is not None  # a single ``latency`` is the backend's own run: no mode header
    if rows is None:
        rows = [{"mode": result.get("backend", "run"), "latency": result["latency"]}]
    lines = [f"=== {title or 'Performance summary'} ===", *_setting_lines(result)]
    for row in rows:
        if named:
            lines.append(f"--- {row['mode']} ---")
        if "error" in row:
            lines.append(f"not timed: {row['error']}")
            continue
        lat = row["latency"]
        if "throughput_qps" in row:
            lines.append(f"Throughput: {row['throughput_qps']:.2f} qps ({row['throughput_fps']:.2f} FPS at batch "
                         f"{lat['batch']})")
        else:
            lines.append(f"Throughput: {lat['fps']:.2f} clips/s (batch {lat['batch']} / median latency)")
        lines.append(f"Latency: {format_stats(lat)}")
        if row.get("gpu_compute"):
            lines.append(f"GPU Compute Time: {format_stats(row['gpu_compute'])}")
            lines.append(f"FPS (batch / median GPU compute time): {row['gpu_compute']['fps']:.2f}")
    config = result.get("config") or result
    timed = rows[0].get("latency", {}).get("iterations", config.get("iterations"))
    if timed is not None:
        lines.append(f"Iterations: {timed} timed after {config.get('warmup', '?')} warm-up"
                     + (f", threads {result.get('threads') or 'default'}" if "threads" in result else ""))
    machine = result.get("machine") or {}
    if machine:
        load = (result.get("load_average") or {}).get("after")
        versions = ", ".join(f"{k} {machine[k]}" for k in ("torch", "onnxruntime", "tensorrt") if k in machine)
        lines.append(f"Machine: {machine.get('cpu_model', machine.get('processor', '?'))}, "
                     f"{machine.get('cpu_count')} CPUs" + (f", GPU {machine['gpu']}" if machine.get("gpu") else "")
                     + (f", load average {' / '.join(str(x) for x in load)}" if load else "")
                     + (f"; {versions}" if versions else ""))
    return "\n".join(lines)
