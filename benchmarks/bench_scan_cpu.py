"""CPU selective scan: the reference recurrence vs selective_scan_torch vs the C++ kernel, forward and forward+backward.

Shapes are the paper preset's real ones (float32, delta_softplus, with D, z and delta_bias, as the blocks call it):
SS2D at B = 1 (KD = 2048 in K = 4 groups, N = 16, L = 1024 / 256 / 64 tokens), the temporal blocks (K = 1,
KD = 512, L = 768 / 512 / 256) and SS2D at batch 8 on the finest level. Every number is a median (and p90) over
timed calls after warm-up; speedups are against the reference measured in the same run. The reference takes
seconds per forward call and minutes per forward+backward call at the large shapes (its autograd graph has a node
per step), so it is timed once, without warm-up, and skipped at batch 8: a full run takes 10-30 minutes.

    python benchmarks/bench_scan_cpu.py --json scan_cpu.json
    python benchmarks/bench_scan_cpu.py --shapes ss2d_L1024,temporal_L768 --iterations 20
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from m2s2l_edge.efficiency.benchmarking import LatencyStats, machine_info, time_callable
from m2s2l_edge.ops import cpu_kernel, selective_scan
from m2s2l_edge.ops.selective_scan import selective_scan_ref, selective_scan_torch


@dataclass(frozen=True)
class ScanShape:
    name: str
    batch: int
    kd: int  # K * D channels
    k: int  # groups (scan directions)
    n: int  # state size
    length: int  # L

    @property
    def state_updates(self) -> int:
        return self.batch * self.kd * self.length * self.n


SHAPES = {
    s.name: s
    for s in (
        ScanShape("ss2d_L1024", 1, 2048, 4, 16, 1024),
        ScanShape("ss2d_L256", 1, 2048, 4, 16, 256),
        ScanShape("ss2d_L64", 1, 2048, 4, 16, 64),
        ScanShape("temporal_L768", 1, 512, 1, 16, 768),
        ScanShape("temporal_L512", 1, 512, 1, 16, 512),
        ScanShape("temporal_L256", 1, 512, 1, 16, 256),
        ScanShape("ss2d_L1024_b8", 8, 2048, 4, 16, 1024),
    )
}

IMPLEMENTATIONS: dict[str, Callable] = {
    "reference": selective_scan_ref,
    "torch": selective_scan_torch,
    "cpu_kernel": cpu_kernel.selective_scan_cpu,
    # torch.ops.m2s2l.selective_scan: the operator the model exports with; on the CPU it runs the C++ kernel, so
    # its row shows the operator's dispatch overhead (and, with backward, its recompute-based autograd).
    "custom_op": functools.partial(selective_scan, backend="op"),
}


def make_inputs(shape: ScanShape, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs in the ranges the trained blocks see (dt = softplus(delta + bias) around 0.01-0.1, A = -exp(A_log))."""
    g = torch.Generator().manual_seed(seed)
    b, kd, k, n, length = shape.batch, shape.kd, shape.k, shape.n, shape.length
    return {
        "u": torch.randn(b, kd, length, generator=g),
        "delta": torch.randn(b, kd, length, generator=g) * 0.5 - 2.0,
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(kd, 1),  # S4D-real initialisation
        "B": torch.randn(b, k, n, length, generator=g),
        "C": torch.randn(b, k, n, length, generator=g),
        "D": torch.ones(kd),
        "z": torch.randn(b, kd, length, generator=g),
        "delta_bias": torch.rand(kd, generator=g) * 0.5 - 2.0,
    }


def forward_fn(impl: Callable, inputs: dict[str, torch.Tensor]) -> Callable[[], object]:
    def run():
        with torch.no_grad():
            return impl(**inputs, delta_softplus=True)

    return run


def forward_backward_fn(impl: Callable, inputs: dict[str, torch.Tensor]) -> Callable[[], object]:
    leaves = {name: t.detach().clone().requires_grad_(True) for name, t in inputs.items()}
    dy = torch.randn(inputs["u"].shape, generator=torch.Generator().manual_seed(1))

    def run():
        for t in leaves.values():
            t.grad = None
        impl(**leaves, delta_softplus=True).backward(dy)

    return run


@dataclass(frozen=True)
class Result:
    shape: str
    implementation: str
    mode: str  # "forward" or "forward+backward"
    stats: LatencyStats | None
    skipped: str = ""  # why, when stats is None

    def as_dict(self) -> dict:
        out = {"shape": self.shape, "implementation": self.implementation, "mode": self.mode}
        if self.stats is None:
            out["skipped"] = self.skipped
        else:
            out.update(self.stats.as_dict())
        return out


def skip_reason(impl: str, mode: str, shape: ScanShape, args: argparse.Namespace) -> str:
    if impl == "reference" and (args.ref_iterations == 0 or shape.state_updates > args.ref_max_updates):
        return "reference skipped (minutes per call at this shape; see --ref-max-updates)"
    if impl == "reference" and mode == "forward+backward" and shape.state_updates > args.ref_backward_max_updates:
        return "reference backward skipped (autograd through L steps: minutes; see --ref-backward-max-updates)"
    # The torch path's autograd keeps about five (L, B, KD, N) float32 tensors alive.
    if impl == "torch" and mode == "forward+backward" and 5 * 4 * shape.state_updates > args.torch_grad_max_bytes:
        return f"torch autograd skipped (about {5 * 4 * shape.state_updates / 2**30:.1f} GiB of buffers)"
    return ""


def run_shape(shape: ScanShape, args: argparse.Namespace) -> list[Result]:
    inputs = make_inputs(shape)
    results = []
    for mode, make in (("forward", forward_fn), ("forward+backward", forward_backward_fn)):
        for impl_name, impl in IMPLEMENTATIONS.items():
            reason = skip_reason(impl_name, mode, shape, args)
            if reason:
                results.append(Result(shape.name, impl_name, mode, None, reason))
                continue
            slow = impl_name == "reference"
            stats = time_callable(
                make(impl, inputs),
                warmup=0 if slow else args.warmup,
                iterations=args.ref_iterations if slow else args.iterations,
                batch=shape.batch,
            )
            results.append(Result(shape.name, impl_name, mode, stats))
            print(f"  {shape.name:15s} {mode:16s} {impl_name:10s} median {stats.median_ms:10.2f} ms", flush=True)
    return results


def max_abs_diff(shape: ScanShape) -> float:
    """Sanity check in the same run: the kernel against the torch path on the benchmark inputs."""
    inputs = make_inputs(shape)
    with torch.no_grad():
        a = cpu_kernel.selective_scan_cpu(**inputs, delta_softplus=True)
        b = selective_scan_torch(**inputs, delta_softplus=True)
    return (a - b).abs().max().item()


def print_table(results: list[Result]) -> None:
    ref = {(r.shape, r.mode): r.stats for r in results if r.implementation == "reference" and r.stats}
    torch_path = {(r.shape, r.mode): r.stats for r in results if r.implementation == "torch" and r.stats}
    header = (
        f"{'shape':15s} {'mode':16s} {'implementation':12s} {'median ms':>10s} {'p90 ms':>10s} "
        f"{'vs ref':>8s} {'vs torch':>9s}"
    )
    print("\n" + header)
    print("-" * len(header))
    for r in results:
        if r.stats is None:
            print(f"{r.shape:15s} {r.mode:16s} {r.implementation:12s} {r.skipped}")
            continue
        base = ref.get((r.shape, r.mode))
        tp = torch_path.get((r.shape, r.mode))
        vs_ref = f"{base.median_ms / r.stats.median_ms:7.1f}x" if base else "     n/a"
        vs_torch = f"{tp.median_ms / r.stats.median_ms:8.1f}x" if tp else "      n/a"
        print(
            f"{r.shape:15s} {r.mode:16s} {r.implementation:12s} {r.stats.median_ms:10.2f} {r.stats.p90_ms:10.2f} "
            f"{vs_ref} {vs_torch}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated subset of {', '.join(SHAPES)}")
    parser.add_argument("--iterations", type=int, default=10, help="timed calls of the torch path and the kernel")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing (not for the reference)")
    parser.add_argument("--ref-iterations", type=int, default=1, help="timed calls of the reference (0 skips it)")
    parser.add_argument(
        "--ref-max-updates",
        type=int,
        default=1 * 2048 * 1024 * 16,
        help="skip the reference above this many state updates B*KD*L*N (default: the B=1 SS2D shape)",
    )
    parser.add_argument(
        "--ref-backward-max-updates",
        type=int,
        default=4 * 2**20,
        help="skip the reference's backward above this many state updates (default: the smaller shapes only)",
    )
    parser.add_argument("--torch-grad-max-bytes", type=float, default=3 * 2**30, help="skip torch-path autograd above")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    parser.add_argument("--json", default="", help="write the results and the machine description to this file")
    args = parser.parse_args(argv)

    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in names if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; valid: {', '.join(SHAPES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not cpu_kernel.is_available():
        print(f"error: {cpu_kernel.unavailable_reason()}", file=sys.stderr)
        return 1

    info = machine_info()
    load_before = os.getloadavg()
    print(
        f"{info.get('cpu_model', info['processor'])}, {info['cpu_count']} CPUs, torch {info.get('torch')} "
        f"with {torch.get_num_threads()} threads; load average {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}"
    )
    started = time.time()
    results: list[Result] = []
    checks = {}
    for name in names:
        checks[name] = max_abs_diff(SHAPES[name])
        results.extend(run_shape(SHAPES[name], args))
    load_after = os.getloadavg()
    print_table(results)
    print("\nmax |kernel - torch path| on the forward outputs: " + ", ".join(f"{k} {v:.2g}" for k, v in checks.items()))
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1-minute); "
        f"{time.time() - started:.0f} s in all"
    )

    if args.json:
        payload = {
            "benchmark": "selective_scan_cpu",
            "machine": info,
            "threads": torch.get_num_threads(),
            "kernel_library": str(cpu_kernel.library_path()),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "shapes": [asdict(SHAPES[n]) for n in names],
            "max_abs_diff_vs_torch": checks,
            "results": [r.as_dict() for r in results],
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
