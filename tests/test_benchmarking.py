"""The one benchmarking module: timers with device synchronisation, percentiles, the machine record, the summary.

No timing is asserted beyond lower bounds a sleep guarantees (a loaded machine only makes calls slower).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from m2s2l_edge.efficiency import benchmarking as B


def test_percentile_matches_numpy():
    values = sorted(np.random.default_rng(0).exponential(size=37).tolist())
    for q in (0.0, 0.5, 0.9, 0.99, 1.0):
        assert B.percentile(values, q) == pytest.approx(float(np.percentile(values, 100 * q)))
    with pytest.raises(ValueError):
        B.percentile([], 0.5)


def test_summarize_latencies():
    stats = B.summarize_latencies([4.0, 1.0, 3.0, 2.0], batch=2)
    assert (stats.min_ms, stats.max_ms, stats.median_ms, stats.mean_ms) == (1.0, 4.0, 2.5, 2.5)
    assert stats.fps == pytest.approx(1000.0 * 2 / 2.5)
    assert stats.as_dict()["fps"] == stats.fps and stats.iterations == 4
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        B.summarize_latencies([], batch=1)


def test_time_callable_waits_for_the_device():
    """The synchronisation after each call is inside that call's time: work a device finishes only when it is
    synchronised (here 3 ms in the synchroniser) must show in the latency."""
    calls = []

    def sync():
        calls.append("sync")
        time.sleep(0.003)

    stats = B.time_callable(lambda: calls.append("fn"), warmup=2, iterations=4, batch=1, synchronize=sync)
    assert calls == ["fn", "fn", "sync"] + ["fn", "sync"] * 4  # warm-up, one sync, then each timed call synced
    assert stats.iterations == 4 and stats.min_ms >= 3.0
    with pytest.raises(ValueError, match="warmup must be >= 0"):
        B.time_callable(lambda: None, warmup=-1, iterations=1, batch=1)


def test_synchronizer_per_device():
    assert B.synchronizer("cpu") is None
    assert callable(B.synchronizer("cuda:1"))  # built without touching the device; called only when timing


def test_time_interleaved_alternates():
    order = []
    stats = B.time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1,
                               iterations=3, batch=4)
    assert order == ["a", "b"] + ["a", "b", "b", "a", "a", "b"]
    assert set(stats) == {"a", "b"} and stats["a"].iterations == 3 and stats["a"].batch == 4


def test_time_per_call_on_the_cpu():
    ms = B.time_per_call(lambda: time.sleep(0.001), "cpu", min_iters=5, budget_s=0.01)
    assert ms >= 1.0


def test_load_average_and_machine():
    load = B.load_average()
    assert load is None or (len(load) == 3 and all(x >= 0 for x in load))
    info = B.machine_info()
    assert info["cpu_count"] >= 1 and "python" in info and "numpy" in info


def _stats(**kw) -> dict:
    base = dict(iterations=3, batch=1, mean_ms=2.0, median_ms=2.0, p90_ms=2.5, p99_ms=2.9, min_ms=1.5, max_ms=3.0,
                fps=500.0)
    return {**base, **kw}


def test_format_summary_of_a_backend_run():
    result = {"backend": "onnxruntime", "providers": ["CPUExecutionProvider"],
              "model": {"preset": "tiny", "scan": "portable", "precision": "fp32"},
              "input": {"name": "clip", "shape": [2, 4, 3, 64, 64], "dtype": "float32"},
              "config": {"batch": 2, "warmup": 1, "iterations": 3, "seed": 0}, "threads": 2,
              "latency": _stats(batch=2, fps=1000.0), "load_average": {"after": [1.5, 1.0, 0.5]},
              "machine": {"cpu_model": "Some CPU", "cpu_count": 2, "onnxruntime": "1.23"}}
    lines = B.format_summary(result).splitlines()
    assert lines[0] == "=== Performance summary ==="
    assert lines[1] == "Backend: onnxruntime (CPUExecutionProvider), model tiny, portable, fp32"
    assert "Throughput: 1000.00 clips/s (batch 2 / median latency)" in lines
    assert "Iterations: 3 timed after 1 warm-up, threads 2" in lines
    assert lines[-1] == "Machine: Some CPU, 2 CPUs, load average 1.5 / 1.0 / 0.5; onnxruntime 1.23"
    assert not any(line.startswith("---") for line in lines)  # one run of one backend: no mode header


def test_format_summary_of_a_tensorrt_engine():
    stats = _stats()
    result = {
        "engine": "m.engine", "input": {"name": "clip", "shape": [1, 4, 3, 32, 32], "dtype": "float16"},
        "batch": 1, "warmup": 1, "iterations": 3, "tensorrt": "10.3.0.30", "gpu": "Orin",
        "compute_capability": "8.7",
        "jetson": {"l4t_release": "R36.4.3", "power_mode": "MAXN (0)", "jetson_clocks": "on"},
        "rows": [{"mode": "enqueue", "latency": stats, "gpu_compute": stats, "throughput_qps": 400.0,
                  "throughput_fps": 400.0},
                 {"mode": "cuda-graph", "error": "capture failed: x"}],
    }
    text = B.format_summary(result, title="TensorRT engine")
    lines = text.splitlines()
    assert lines[0] == "=== TensorRT engine ===" and lines[1] == "TensorRT 10.3.0.30 on Orin (sm 8.7), engine m.engine"
    assert "power mode MAXN (0), jetson_clocks on" in text
    assert "Throughput: 400.00 qps (400.00 FPS at batch 1)" in text and "GPU Compute Time: min = 1.500 ms" in text
    assert "percentile(99%) = 2.900 ms" in text and "not timed: capture failed: x" in text
    assert lines.index("--- enqueue ---") < lines.index("--- cuda-graph ---")
    assert "Iterations: 3 timed after 1 warm-up" in lines


def test_time_callable_reports_every_call_outside_the_timed_span():
    seen = []

    def on_call(done, total):
        seen.append((done, total))
        time.sleep(0.02)  # a slow progress display must not count as the call's time

    stats = B.time_callable(lambda: None, warmup=2, iterations=3, batch=1, on_call=on_call)
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert stats.max_ms < 10


def test_table_timing_reports_rows_then_calls():
    from m2s2l_edge.efficiency.table import TimingConfig, build_table

    events = []
    build_table(rows=["m2s2l"], fps=True, timing=TimingConfig(warmup=1, iterations=2),
                progress=lambda method: events.append(method), on_call=lambda d, n: events.append((d, n)))
    assert events == ["M²S²L (ours, paper preset)", (1, 3), (2, 3), (3, 3)]


def test_profile_fps_rows_use_the_same_summary():
    from m2s2l_edge.efficiency.profile import time_forward

    calls = []
    result = time_forward("tiny", batch=1, device="cpu", warmup=1, iterations=2, on_call=lambda d, n: calls.append(d))
    assert calls == [1, 2, 3]
    (row,) = result["rows"]
    assert row["mode"] == "fp32 eager" and row["latency"]["iterations"] == 2 and row["latency"]["fps"] > 0
    text = B.format_summary(result, title="forward pass on cpu")
    assert "--- fp32 eager ---" in text and "Device: cpu" in text and "Input: clip (1, 4, 3, 64, 64) float32" in text
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        time_forward("tiny", iterations=0)


def test_write_json_makes_the_folder_and_replaces_the_file_whole(tmp_path):
    import json
    from pathlib import Path

    from m2s2l_edge.efficiency.benchmarking import write_json

    path = tmp_path / "results" / "run.json"
    write_json(path, {"median_ms": 1.5, "where": Path("/x")})
    assert json.loads(path.read_text()) == {"median_ms": 1.5, "where": "/x"}  # a Path is written as its text
    write_json(path, {"median_ms": 2.0})
    assert json.loads(path.read_text()) == {"median_ms": 2.0}
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json"]  # no temporary left beside it
