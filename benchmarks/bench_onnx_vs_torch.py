"""ONNX Runtime (CPU, portable-flavour export) against PyTorch eager (CPU) on the same weights, in one run.

For each preset: export the portable flavour with a dynamic batch once (fresh weights, seed 0), open it in ONNX
Runtime and the same model in PyTorch (scan backend "auto": the C++ CPU kernel when it builds), each with the same
intra-op thread count; then for each batch size time both on the same random clips. Rounds alternate the two
backends (torch, onnx, onnx, torch, ...) so that load changes on a shared machine hit both alike; the load average
is recorded before and after each row.

    python benchmarks/bench_onnx_vs_torch.py                       # small and paper, batch 1 and 8, 2 threads
    python benchmarks/bench_onnx_vs_torch.py --presets small --batches 1 --threads 1 --iterations 5

Writes benchmarks/results/onnx_vs_torch.json (``--json``); prints a table with median / p90 latency, FPS and the
ONNX Runtime speed-up (torch median / onnx median).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_onnx_vs_torch")

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "onnx_vs_torch.json"


def bench_preset(preset: str, batches: list[int], threads: int, warmup: int, iterations: int, work: Path,
                 scan_form: str) -> list[dict]:
    from m2s2l_edge.efficiency.benchmarking import load_average, time_interleaved
    from m2s2l_edge.export.onnx_export import ExportConfig, export_onnx, load_source_model
    from m2s2l_edge.runtime import create_backend

    model, source = load_source_model(preset=preset, seed=0)
    t0 = time.perf_counter()
    path = export_onnx(model, work / f"{preset}_portable.onnx",
                       ExportConfig(scan="portable", dynamic_batch=True, scan_form=scan_form), source=source)
    export_s = time.perf_counter() - t0
    del model
    ort_backend = create_backend("onnxruntime", path, threads=threads)
    torch_backend = create_backend("torch", preset=preset, seed=0, threads=threads)
    cfg = torch_backend.model.cfg
    rows = []
    for batch in batches:
        clips = np.random.default_rng(0).uniform(
            -1, 1, (batch, cfg.clip_len, cfg.in_channels, cfg.image_size, cfg.image_size)).astype(np.float32)
        # Same weights, same clips: a sanity check that the two are timing the same computation.
        diff = float(np.max(np.abs(ort_backend.run(clips)["frame_pred"] - torch_backend.run(clips)["frame_pred"])))
        load_before = load_average()
        fns = {"torch": functools.partial(torch_backend.run, clips),
               "onnxruntime": functools.partial(ort_backend.run, clips)}
        stats = time_interleaved(fns, warmup=warmup, iterations=iterations, batch=batch)
        row = {
            "preset": preset,
            "image_size": cfg.image_size,
            "batch": batch,
            "threads": threads,
            "torch": stats["torch"].as_dict(),
            "onnxruntime": stats["onnxruntime"].as_dict(),
            "speedup_median": stats["torch"].median_ms / stats["onnxruntime"].median_ms,
            "max_abs_diff_frame_pred": diff,
            "torch_scan_backend": torch_backend.metadata["scan_backend"],
            "onnx_scan_form": scan_form,
            "export_seconds": export_s,
            "load_average": {"before": load_before, "after": load_average()},
        }
        logger.info("%s batch %d: torch %.1f ms, onnxruntime %.1f ms (x%.2f), load %s", preset, batch,
                    row["torch"]["median_ms"], row["onnxruntime"]["median_ms"], row["speedup_median"],
                    row["load_average"]["after"])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "paper"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of both backends")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--scan-form", default="in_body", help="portable Scan body: in_body or precompute")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._export"):
        logging.getLogger(chatty).setLevel(logging.ERROR)

    from m2s2l_edge.efficiency.benchmarking import machine_info
    from m2s2l_edge.io import atomic_write_text

    rows = []
    with tempfile.TemporaryDirectory(prefix="m2s2l_bench_") as work:
        for preset in args.presets:
            rows += bench_preset(preset, args.batches, args.threads, args.warmup, args.iterations, Path(work),
                                 args.scan_form)
    result = {"benchmark": "onnxruntime (portable) vs torch eager, CPU", "warmup": args.warmup,
              "iterations": args.iterations, "rows": rows, "machine": machine_info()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")

    header = (f"{'preset':8s} {'batch':>5s} {'thr':>3s} | {'torch med':>10s} {'p90':>9s} {'FPS':>7s} | "
              f"{'ORT med':>10s} {'p90':>9s} {'FPS':>7s} | {'speed-up':>8s} | load avg")
    print(header)
    print("-" * len(header))
    for r in rows:
        t, o = r["torch"], r["onnxruntime"]
        print(f"{r['preset']:8s} {r['batch']:5d} {r['threads']:3d} | {t['median_ms']:8.1f}ms {t['p90_ms']:7.1f}ms "
              f"{t['fps']:7.2f} | {o['median_ms']:8.1f}ms {o['p90_ms']:7.1f}ms {o['fps']:7.2f} | "
              f"{r['speedup_median']:7.2f}x | {r['load_average']['before']} -> {r['load_average']['after']}")
    print(f"wrote {args.json}")
    slower = [r for r in rows if r["speedup_median"] < 1.0]
    if slower:
        logger.warning("ONNX Runtime slower than PyTorch eager in %d row(s)", len(slower))
    return 0


if __name__ == "__main__":
    sys.exit(main())
