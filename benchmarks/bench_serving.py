"""Serving throughput and latency: N simulated cameras sending T-frame clips to a real Triton server, against the
same N cameras calling the local ONNX Runtime backend, in one run.

The server is the nvidia-pytriton wheel's ``tritonserver`` (``make triton-env``) on 127.0.0.1 serving the python
model of a ``serve triton-repo`` repository (our ONNX Runtime runner inside Triton, dynamic batching on). Each camera
is a thread that sends one clip (batch 1) per request, back to back, as ``watch`` would with one ready window; the
local baseline is the same threads calling one shared ``OnnxRuntimeBackend`` (an ONNX Runtime session may be run
from several threads) with the same intra-op thread count as the server's model.

Per camera count: throughput (clips/s over the timed wall time), per-request latency mean / median / p90 / p99,
and for the server the mean batch it executed (inference_count / execution_count from its statistics API).

    python benchmarks/bench_serving.py --preset tiny --cameras 1 4 16 --iterations 20 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def export_portable(preset: str, work: Path) -> Path:
    """A fresh portable export, made in a child process: torch (and its thread pool) then never lives in this one,
    which would tilt the local baseline against the server's clean process."""
    import subprocess

    out = work / f"{preset}_portable.onnx"
    subprocess.run([sys.executable, "-m", "m2s2l_edge", "export", "--preset", preset, "--scan", "portable",
                    "--dynamic", "--no-check", "--out", str(out)], check=True, capture_output=True, timeout=1800)
    return out


def run_cameras(backend, cameras: int, warmup: int, iterations: int, clip_shape: tuple[int, ...]) -> dict:
    """``cameras`` threads, each ``warmup`` untimed then ``iterations`` timed requests of one clip."""
    from m2s2l_edge.efficiency.benchmarking import summarize_latencies

    clips = [np.random.default_rng(i).uniform(-1, 1, (1, *clip_shape)).astype(np.float32) for i in range(cameras)]
    latencies: list[list[float]] = [[] for _ in range(cameras)]
    errors: list[BaseException] = []
    start = threading.Barrier(cameras + 1)
    warmed = threading.Barrier(cameras + 1)

    def camera(i: int) -> None:
        try:
            start.wait()
            for _ in range(warmup):
                backend.run(clips[i])
            warmed.wait()
            for _ in range(iterations):
                t0 = time.perf_counter()
                backend.run(clips[i])
                latencies[i].append((time.perf_counter() - t0) * 1000.0)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            for barrier in (start, warmed):
                barrier.abort()

    threads = [threading.Thread(target=camera, args=(i,), daemon=True) for i in range(cameras)]
    for th in threads:
        th.start()
    start.wait()
    warmed.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"a camera failed: {errors[0]}")
    stats = summarize_latencies([x for per in latencies for x in per], batch=1).as_dict()
    stats.pop("fps")  # per-request latency; throughput below counts all cameras
    return {"cameras": cameras, "clips": cameras * iterations, "wall_s": wall,
            "throughput_clips_per_s": cameras * iterations / wall, "latency_ms": stats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--onnx", type=Path, help="a portable-flavour export to serve (default: export --preset)")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20, help="timed requests per camera")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, server model and local alike")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--triton-venv", type=Path, default=ROOT / ".venv-triton")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from m2s2l_edge.artifacts.metadata import read_metadata
    from m2s2l_edge.efficiency.benchmarking import load_average, machine_info
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.serve import triton_repo as tr
    from m2s2l_edge.serve.local_server import LocalTritonServer, TritonEnv

    env = TritonEnv(args.triton_venv)
    env.check()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        work = Path(tmp)
        onnx = args.onnx or export_portable(args.preset, work)
        meta = read_metadata(onnx)
        clip_shape = meta.input_shape[1:]
        repo = work / "repo"
        tr.write_repository(repo, onnx, config=tr.RepoConfig(max_batch=args.max_batch, threads=args.threads))
        local = create_backend("onnxruntime", onnx, threads=args.threads)
        rows = []
        with LocalTritonServer(env, repo, (tr.PYTHON_MODEL,), work / "server") as server:
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            served = create_backend("triton", url, model=tr.PYTHON_MODEL)
            for cameras in args.cameras:
                before = served.statistics()
                remote = run_cameras(served, cameras, args.warmup, args.iterations, clip_shape)
                after = served.statistics()
                executions = int(after["execution_count"]) - int(before["execution_count"])
                inferences = int(after["inference_count"]) - int(before["inference_count"])
                remote["server_mean_batch"] = inferences / max(executions, 1)
                base = run_cameras(local, cameras, args.warmup, args.iterations, clip_shape)
                row = {"cameras": cameras, "triton": remote, "local": base,
                       "throughput_ratio_triton_over_local":
                           remote["throughput_clips_per_s"] / base["throughput_clips_per_s"]}
                rows.append(row)
                print(f"{cameras:>3} camera(s): triton {remote['throughput_clips_per_s']:7.1f} clips/s, p50 "
                      f"{remote['latency_ms']['median_ms']:7.1f} ms, p99 {remote['latency_ms']['p99_ms']:7.1f} ms, "
                      f"mean batch {remote['server_mean_batch']:.2f} | local {base['throughput_clips_per_s']:7.1f} "
                      f"clips/s, p50 {base['latency_ms']['median_ms']:7.1f} ms, p99 "
                      f"{base['latency_ms']['p99_ms']:7.1f} ms | ratio {row['throughput_ratio_triton_over_local']:.2f}",
                      file=sys.stderr)
    result = {
        "benchmark": "bench_serving",
        "preset": meta.preset, "onnx": str(args.onnx) if args.onnx else f"fresh export of {args.preset}",
        "clip_shape": list(clip_shape), "protocol": args.protocol, "threads": args.threads,
        "max_batch": args.max_batch, "queue_delay_us": tr.DEFAULT_QUEUE_DELAY_US,
        "warmup": args.warmup, "iterations": args.iterations, "triton_server": "2.51.0 (nvidia-pytriton 0.7.0)",
        "machine": machine_info(), "load_before": load_before, "load_after": load_average(), "rows": rows,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        from m2s2l_edge.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
