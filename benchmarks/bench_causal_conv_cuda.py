"""The temporal Mamba blocks' causal convolution on a GPU: causal-conv1d's fused kernel against the PyTorch path.

    python benchmarks/bench_causal_conv_cuda.py --json OUT/causal_conv.json      (benchmarks/gpu_check.sh runs it)

Shapes: the paper preset's temporal blocks (d_inner = 512 channels, d_conv = 4; L = frames · 16² tokens: 768, 512,
256 for windows 1 / 2 / 3) at batch 1 and 8, FP16 and FP32, with bias and SiLU (what MambaMixer calls). For each:
parity of ``causal_conv1d_fn`` with the PyTorch path (max |Δ| / max |torch|), then forward and forward + backward
timings of both (warm-up, median over CUDA-synchronised calls), the PyTorch path being the baseline measured in the
same run. Without causal-conv1d only the PyTorch path is timed and the JSON says why. Exit: 0, 1 when parity fails,
2 without a CUDA device.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from m2s2l_edge.efficiency.benchmarking import machine_info, time_callable, write_json
from m2s2l_edge.ops import causal_conv

SHAPES = [(b, 512, length) for b in (1, 8) for length in (768, 512, 256)]
BOUNDS = {torch.float32: 1e-5, torch.float16: 2e-3}


def _time(fn, warmup: int, iterations: int, batch: int) -> float:
    return time_callable(fn, warmup=warmup, iterations=iterations, batch=batch,
                         synchronize=torch.cuda.synchronize).median_ms


def run_shape(batch: int, channels: int, length: int, dtype: torch.dtype, warmup: int, iterations: int) -> dict:
    g = torch.Generator(device="cuda").manual_seed(length)
    # Channel-last like MambaMixer's input (a chunk of in_proj's transposed output).
    xz = torch.randn(batch, length, 2 * channels, device="cuda", dtype=dtype, generator=g).transpose(1, 2)
    x = xz[:, :channels]  # (B, D, L), stride 1 along D
    weight = (torch.randn(channels, 1, 4, device="cuda", generator=g) / 4).to(dtype)
    bias = torch.randn(channels, device="cuda", generator=g).to(dtype)
    row: dict = {"batch": batch, "channels": channels, "length": length, "dtype": str(dtype).removeprefix("torch.")}
    backends = ["torch"] + (["causal_conv1d"] if causal_conv.is_available() else [])
    with torch.no_grad():
        outputs = {b: causal_conv.causal_conv1d(x, weight, bias, "silu", backend=b) for b in backends}
    if "causal_conv1d" in outputs:
        scale = outputs["torch"].float().abs().max().item()
        err = (outputs["causal_conv1d"].float() - outputs["torch"].float()).abs().max().item() / scale
        row["parity_rel"] = err
        row["parity_ok"] = err <= BOUNDS[dtype]
    for name in backends:
        def fwd(name=name):
            with torch.no_grad():
                causal_conv.causal_conv1d(x, weight, bias, "silu", backend=name)

        leaves = [t.detach().clone().requires_grad_(True) for t in (x, weight, bias)]

        def fwd_bwd(name=name, leaves=leaves):
            causal_conv.causal_conv1d(*leaves, "silu", backend=name).float().sum().backward()

        row[f"{name}_fwd_ms"] = _time(fwd, warmup, iterations, batch)
        row[f"{name}_fwd_bwd_ms"] = _time(fwd_bwd, warmup, iterations, batch)
    if "causal_conv1d" in outputs:
        row["speedup_fwd"] = row["torch_fwd_ms"] / row["causal_conv1d_fwd_ms"]
        row["speedup_fwd_bwd"] = row["torch_fwd_bwd_ms"] / row["causal_conv1d_fwd_bwd_ms"]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_causal_conv_cuda: no CUDA device visible to PyTorch", file=sys.stderr)
        return 2
    rows = []
    for dtype in (torch.float16, torch.float32):
        for batch, channels, length in SHAPES:
            row = run_shape(batch, channels, length, dtype, args.warmup, args.iterations)
            rows.append(row)
            fast = (f" | causal_conv1d {row['causal_conv1d_fwd_ms']:.3f} / {row['causal_conv1d_fwd_bwd_ms']:.3f} ms, "
                    f"rel {row['parity_rel']:.1e}") if "causal_conv1d_fwd_ms" in row else ""
            print(f"{row['dtype']:8s} B{batch} D{channels} L{length}: torch {row['torch_fwd_ms']:.3f} / "
                  f"{row['torch_fwd_bwd_ms']:.3f} ms (fwd / fwd+bwd){fast}", flush=True)
    result = {"benchmark": "causal_conv_cuda", "causal_conv1d": causal_conv.is_available(),
              "note": None if causal_conv.is_available() else f"causal-conv1d not installed: {causal_conv.INSTALL}",
              "rows": rows, "machine": machine_info(), "loadavg": os.getloadavg()}
    if args.json:
        write_json(args.json, result)
    return 0 if all(r.get("parity_ok", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
