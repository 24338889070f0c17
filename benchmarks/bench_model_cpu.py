"""CPU forward-pass benchmark of M²S²L: presets × batch sizes, and the selective scan's share of the forward time.

    python benchmarks/bench_model_cpu.py --json benchmarks/results/model_cpu.json

For each preset and batch: warm-up, then the median / p90 of timed inference-mode forward passes of
  - ``rewritten``: the model as PyTorch inference runs it (``TorchBackend``, ``eval``, ``bench``, ``profile --fps``):
    ``optimize_for_inference`` (BatchNorm folded, SS2D's parallel convolutions merged), scan backend auto;
  - ``auto``: the model as built (as trained), scan backend auto (the C++ CPU kernel where it builds);
  - the baseline measured in the same run: the model as built with the pure PyTorch scan path.
The scan share comes from torch.profiler over one forward with the scan as one operator. The load average is
recorded before and after each row (the machine may be shared).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from m2s2l_edge.efficiency.benchmarking import load_average, machine_info, time_callable, write_json
from m2s2l_edge.models import create_model


def scan_share(preset: str, batch: int) -> dict:
    """Fraction of one forward pass spent inside the selective scan (custom operator, auto backend inside)."""
    from torch.profiler import ProfilerActivity, profile

    model = create_model(preset, scan_backend="op", seed=0).eval()
    cfg = model.cfg
    clip = torch.randn(batch, cfg.clip_len, 3, cfg.image_size, cfg.image_size)
    with torch.inference_mode():
        model.predict(clip)  # warm-up (first-call allocations, kernel build)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model.predict(clip)
    events = prof.key_averages()
    scan_us = sum(e.cpu_time_total for e in events if e.key == "m2s2l::selective_scan")
    total_us = max(e.cpu_time_total for e in events)  # the outermost frame covers the whole forward
    return {"scan_ms": scan_us / 1000, "forward_ms": total_us / 1000, "scan_fraction": scan_us / total_us}


def bench(preset: str, batch: int, backend: str, warmup: int, iters: int, rewritten: bool = False) -> dict:
    model = create_model(preset, scan_backend=backend, seed=0).eval()
    if rewritten:
        from m2s2l_edge.models.fold import optimize_for_inference

        optimize_for_inference(model)
    cfg = model.cfg
    clip = torch.randn(batch, cfg.clip_len, 3, cfg.image_size, cfg.image_size)

    def fwd():
        with torch.inference_mode():
            model.predict(clip)

    return time_callable(fwd, warmup=warmup, iterations=iters, batch=batch).as_dict()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["small", "paper"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--baseline", default="torch", help="scan backend measured as the baseline (default: torch)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    rows = []
    for preset in args.presets:
        for batch in args.batches:
            load_before = load_average()
            rewritten = bench(preset, batch, "auto", args.warmup, args.iters, rewritten=True)
            fast = bench(preset, batch, "auto", args.warmup, args.iters)
            base = bench(preset, batch, args.baseline, args.warmup, args.iters)
            share = scan_share(preset, batch)
            row = {"preset": preset, "batch": batch, "rewritten": rewritten, "auto": fast, args.baseline: base,
                   **share, "speedup_vs_baseline": base["median_ms"] / fast["median_ms"],
                   "rewrite_speedup": fast["median_ms"] / rewritten["median_ms"],
                   "loadavg_before": load_before, "loadavg_after": load_average()}
            rows.append(row)
            print(
                f"{preset:6s} batch {batch:2d}: rewritten {rewritten['median_ms']:9.1f} ms "
                f"({rewritten['fps']:7.2f} FPS) | auto {fast['median_ms']:9.1f} ms (p90 {fast['p90_ms']:9.1f}, "
                f"{fast['fps']:7.2f} FPS) | {args.baseline} scan {base['median_ms']:9.1f} ms | "
                f"scan share {100 * share['scan_fraction']:5.1f} % "
                f"({share['scan_ms']:.1f} of {share['forward_ms']:.1f} ms)",
                flush=True,
            )
    from m2s2l_edge.ops import resolve_backend

    result = {"benchmark": "model_cpu_forward", "auto_backend": resolve_backend("auto", "cpu"), "rows": rows,
              "machine": machine_info(), "loadavg": load_average()}
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
