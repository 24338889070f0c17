"""Parity, speed and model FPS of our CUDA selective-scan kernel on one GPU (driven by benchmarks/gpu_check.sh).

    PYTHONPATH=. python benchmarks/bench_scan_cuda.py [--out results.json] [--quick] [--skip-model]
    PYTHONPATH=. python benchmarks/bench_scan_cuda.py --dry-run      # CPU: imports, arguments, code paths

Sections (each isolated: a failure is recorded in the JSON and the others still run):
  parity   y and h_L of the kernel vs ``selective_scan_ref`` in float64, at the paper preset's scan shapes and at
           random shapes (K = 1, 4; with/without z, delta_bias, softplus; L = 1, odd L, N not a power of two), for
           every kernel variant (2, 4, 8 states per thread). Error = max|y - y_ref| / max|y_ref| (max-norm relative:
           elementwise relative error is meaningless where y crosses zero). Bounds: FP32 1e-5; FP16 1e-3, i.e. twice
           the 2^-11 relative rounding of the FP16 output itself (inputs are the same FP16 values for both sides).
  floor    max(bytes / copy bandwidth, exps / SFU rate) per shape. Bytes: u, delta (, z) read and y written once,
           B and C read once. Copy bandwidth: a 1 GiB device-to-device copy (read + write bytes / time). SFU rate:
           16 MUFU ops / clock / SM (sm_80-sm_90) x SMs x SM clock. Exps: B*KD*L*N for exp(dt*A), plus B*KD*L for
           softplus and for the SiLU gate when present.
  speed    kernel time (CUDA graph of back-to-back calls: GPU time only; and eager, as a caller sees it), ratio to
           the floor, and speedup over the fast PyTorch path ``selective_scan_torch`` (eager, same GPU, same inputs).
  model    whole-model FPS of ``create_model("paper", scan_backend="cuda")`` in FP16 (``optimize_for_inference``:
           BatchNorm folded, multi-scale convolutions merged) at batch 1 and 32, replayed from a CUDA graph (and
           eager), beside ``scan_backend="torch"`` where time allows.

Prints a short table and writes JSON to --out (default: $OUT/bench_scan_cuda.json when $OUT is set).
Exit status: 0 when every parity check passed, 1 otherwise, 2 when the kernel could not be built or loaded.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from m2s2l_edge.efficiency.benchmarking import machine_info, time_cuda_graph, time_per_call, write_json  # noqa: E402
from m2s2l_edge.ops.selective_scan import selective_scan_ref, selective_scan_torch  # noqa: E402

FP32_BOUND = 1e-5
FP16_BOUND = 1e-3
# MUFU (exp2, rcp, lg2, ...) results per clock per SM for compute capability 5.x-9.0 (CUDA C Programming Guide,
# arithmetic instruction throughput table).
SFU_OPS_PER_CLOCK_PER_SM = 16
VARIANTS = (2, 4, 8)


@dataclass(frozen=True)
class ScanShape:
    name: str
    batch: int
    kd: int
    k: int
    n: int
    length: int
    with_z: bool = False
    with_bias: bool = True
    with_d: bool = True
    softplus: bool = True


def paper_shapes() -> list[ScanShape]:
    """The scans of the paper preset (dim 256, expand 2, d_state 16, 256x256 input, T = 4)."""
    shapes = []
    for batch in (1, 8):
        for grid, length in (("fine32x32", 1024), ("medium16x16", 256), ("coarse8x8", 64)):
            shapes.append(ScanShape(f"ss2d_{grid}_b{batch}", batch, 2048, 4, 16, length))
        for window, length in (("w1", 768), ("w2", 512), ("w3", 256)):
            shapes.append(ScanShape(f"temporal_{window}_b{batch}", batch, 512, 1, 16, length))
    return shapes


def random_shapes() -> list[ScanShape]:
    """Edge cases of the contract: K = 1 and 4, optional inputs on and off, L = 1, odd L, any N <= 256."""
    return [
        ScanShape("rand_L1", 2, 64, 4, 16, 1, with_z=True),
        ScanShape("rand_oddL", 3, 96, 4, 16, 127, with_z=True, with_bias=False),
        ScanShape("rand_K1_nosoftplus", 2, 40, 1, 16, 200, softplus=False),
        ScanShape("rand_noD_z", 1, 24, 4, 16, 333, with_z=True, with_d=False),
        ScanShape("rand_N5", 2, 36, 2, 5, 65),
        ScanShape("rand_N64", 1, 64, 1, 64, 130, with_z=True),
        ScanShape("rand_N256", 1, 8, 1, 256, 70),
        ScanShape("rand_L1024_z", 2, 128, 4, 16, 1024, with_z=True),
        ScanShape("rand_tile_tail", 1, 4 * 37, 4, 16, 96),
    ]


def make_inputs(shape: ScanShape, dtype: torch.dtype, device: torch.device, seed: int = 0) -> dict:
    """Inputs distributed like a trained Mamba block's: dt in [1e-3, 1e-1] through softplus(delta + bias),
    A = -(1..N) (S4D-real init) jittered, B, C, u ~ N(0, 1)."""
    g = torch.Generator(device="cpu").manual_seed(seed)

    def randn(*size):
        return torch.randn(*size, generator=g)

    b, kd, k, n, length = shape.batch, shape.kd, shape.k, shape.n, shape.length
    dt0 = torch.exp(torch.rand(kd, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    if shape.softplus:
        bias = dt0 + torch.log(-torch.expm1(-dt0))  # inverse softplus
        delta = 0.5 * randn(b, kd, length)
    else:
        bias = dt0
        delta = 0.05 * torch.rand(b, kd, length, generator=g)  # dt stays positive without softplus
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(kd, 1) * torch.exp(0.1 * randn(kd, n))
    inputs = {
        "u": randn(b, kd, length).to(dtype),
        "delta": (delta if shape.with_bias else delta + bias[:, None]).to(dtype),
        "A": A,
        "B": randn(b, k, n, length).to(dtype),
        "C": randn(b, k, n, length).to(dtype),
        "D": randn(kd) if shape.with_d else None,
        "z": randn(b, kd, length).to(dtype) if shape.with_z else None,
        "delta_bias": bias if shape.with_bias else None,
        "delta_softplus": shape.softplus,
    }
    return {name: (t.to(device) if isinstance(t, torch.Tensor) else t) for name, t in inputs.items()}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.abs().max().item()
    err = (out.double() - ref.double()).abs().max().item()
    return err / scale if scale > 0 else err


def check_parity(fn: Callable, shape: ScanShape, dtype: torch.dtype, device: torch.device, seed: int) -> dict:
    inputs = make_inputs(shape, dtype, device, seed)
    f64 = {name: (t.double() if isinstance(t, torch.Tensor) else t) for name, t in inputs.items()}
    y_ref, h_ref = selective_scan_ref(**f64, return_last_state=True)
    y, h = fn(**inputs, return_last_state=True)
    bound = FP16_BOUND if dtype == torch.float16 else FP32_BOUND
    result = {
        "y_rel": rel_err(y, y_ref),
        "state_rel": rel_err(h, h_ref),
        "bound": bound,
        "y_dtype_ok": y.dtype == inputs["u"].dtype and tuple(y.shape) == tuple(inputs["u"].shape),
        "finite": bool(torch.isfinite(y).all().item()),
    }
    # The state is FP32 in both dtypes; its error stays at FP32 level.
    result["ok"] = (
        result["finite"]
        and result["y_dtype_ok"]
        and result["y_rel"] <= bound
        and result["state_rel"] <= max(bound, FP32_BOUND * 10)
    )
    return result


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes per second moved (read + write) by a large device-to-device copy."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    ms = time_per_call(lambda: dst.copy_(src), device, min_iters=10, budget_s=0.3)
    return 2 * src.numel() * 4 / (ms / 1000.0)


def sfu_rate(device: torch.device, attributes: dict | None) -> tuple[float, dict]:
    """MUFU ops per second: 16 x SMs x SM clock (clock from cudaDeviceGetAttribute, else the torch props)."""
    props = torch.cuda.get_device_properties(device)
    clock_khz = (attributes or {}).get("sm_clock_khz") or getattr(props, "clock_rate", 0)
    source = "cudaDevAttrClockRate" if attributes else "torch props"
    if not clock_khz:
        clock_khz, source = 1_755_000, "assumed 1.755 GHz (H100 SXM base boost)"
    sms = props.multi_processor_count
    rate = SFU_OPS_PER_CLOCK_PER_SM * sms * clock_khz * 1e3
    return rate, {"sm_count": sms, "sm_clock_ghz": clock_khz / 1e6, "clock_source": source, "sfu_ops_per_s": rate}


def scan_floor(shape: ScanShape, dtype: torch.dtype, bandwidth: float, sfu: float) -> dict:
    es = torch.finfo(dtype).bits // 8
    tokens = shape.batch * shape.kd * shape.length
    act_bytes = es * tokens * (3 + (1 if shape.with_z else 0))  # u, delta, [z] read; y written
    bc_bytes = es * 2 * shape.batch * shape.k * shape.n * shape.length
    param_bytes = 4 * shape.kd * (shape.n + 2)
    total_bytes = act_bytes + bc_bytes + param_bytes
    exps = tokens * shape.n + (tokens if shape.softplus else 0) + (tokens if shape.with_z else 0)
    mem_ms = total_bytes / bandwidth * 1e3
    sfu_ms = exps / sfu * 1e3
    return {
        "bytes": total_bytes,
        "exps": exps,
        "mem_floor_ms": mem_ms,
        "sfu_floor_ms": sfu_ms,
        "floor_ms": max(mem_ms, sfu_ms),
        "bound": "memory" if mem_ms >= sfu_ms else "sfu",
    }


def scan_kernel_fn(dry_run: bool, variant: int = 0) -> Callable:
    if dry_run:
        return selective_scan_torch  # stand-in so the CPU dry run exercises every code path
    from m2s2l_edge.ops import cuda_backend

    def fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
        return cuda_backend._selective_scan_cuda(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, states_per_thread=variant
        )

    return fn


def run_parity(dry_run: bool, device: torch.device, quick: bool, deadline: float) -> list[dict]:
    shapes = random_shapes() + ([] if dry_run else paper_shapes())
    if dry_run:
        shapes = shapes[:3]
    results = []
    for dtype in (torch.float32, torch.float16):
        for i, shape in enumerate(shapes):
            is_paper = not shape.name.startswith("rand")
            # Every variant on the random shapes; the automatic choice on the (large) paper shapes.
            variants = [0] if dry_run or (is_paper and quick) else ([0] if is_paper else [0, *VARIANTS])
            for variant in variants:
                if variant and shape.n > 32 * variant:
                    continue  # that variant cannot hold N states in one warp: the launcher refuses it
                if variant == 8 and shape.n <= 64 and shape.name != "rand_N5":
                    continue  # G = 8 is only auto-selected for N > 128; test it on a few shapes
                entry = {"shape": asdict(shape), "dtype": str(dtype).replace("torch.", ""), "variant": variant}
                if time.perf_counter() > deadline:
                    results.append({**entry, "skipped": "time budget"})
                    continue
                try:
                    entry.update(check_parity(scan_kernel_fn(dry_run, variant), shape, dtype, device, seed=i))
                except Exception as exc:  # record and go on: one bad shape must not hide the others
                    entry.update(ok=False, error=f"{type(exc).__name__}: {exc}")
                results.append(entry)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return results


def run_speed(
    dry_run: bool, device: torch.device, bandwidth: float, sfu: float, quick: bool, deadline: float
) -> list[dict]:
    timing = {"min_iters": 1, "budget_s": 0.01} if dry_run else {}
    shapes = paper_shapes()
    if dry_run:
        shapes = [ScanShape(s.name, 1, s.kd // 64, s.k, s.n, s.length // 8) for s in shapes[:3]]
    gated = [ScanShape(s.name + "_z", s.batch, s.kd, s.k, s.n, s.length, with_z=True) for s in shapes[:1]]
    dtypes = (torch.float16,) if quick else (torch.float16, torch.float32)
    results = []
    for dtype in dtypes:
        for shape in shapes + gated:
            entry = {"shape": asdict(shape), "dtype": str(dtype).replace("torch.", "")}
            if time.perf_counter() > deadline:
                results.append({**entry, "skipped": "time budget"})
                continue
            inputs = make_inputs(shape, dtype, device)
            entry.update(scan_floor(shape, dtype, bandwidth, sfu))
            try:
                with torch.no_grad():
                    kernel = scan_kernel_fn(dry_run)
                    entry["kernel_eager_ms"] = time_per_call(lambda k=kernel, x=inputs: k(**x), device, **timing)
                    if device.type == "cuda":
                        entry["kernel_ms"] = time_cuda_graph(lambda k=kernel, x=inputs: k(**x))
                        for variant in VARIANTS:
                            if shape.n <= 32 * variant:
                                fn = scan_kernel_fn(dry_run, variant)
                                entry[f"kernel_ms_g{variant}"] = time_cuda_graph(lambda f=fn, x=inputs: f(**x))
                    else:
                        entry["kernel_ms"] = entry["kernel_eager_ms"]
                    entry["ratio_to_floor"] = entry["kernel_ms"] / entry["floor_ms"]
                    entry["torch_ms"] = time_per_call(
                        lambda x=inputs: selective_scan_torch(**x), device, **(timing or {"min_iters": 3})
                    )
                    entry["speedup_vs_torch"] = entry["torch_ms"] / entry["kernel_eager_ms"]
            except Exception as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"
            results.append(entry)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return results


def bench_model(backend: str, batch: int, device: torch.device, dry_run: bool, use_graph: bool) -> dict:
    from m2s2l_edge.models import create_model
    from m2s2l_edge.models.fold import optimize_for_inference

    preset = "tiny" if dry_run else "paper"
    dtype = torch.float32 if dry_run else torch.float16
    model = create_model(preset, scan_backend=backend).eval()
    optimize_for_inference(model)  # BatchNorm folded, convolutions merged, in FP32 before the cast
    model = model.to(device=device, dtype=dtype)
    cfg = model.cfg
    clip = torch.rand(batch, cfg.clip_len, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    clip = (clip * 2 - 1).to(dtype)  # (B, T, 3, H, W) in [-1, 1]
    entry = {"backend": backend, "batch": batch, "preset": preset, "dtype": str(dtype).replace("torch.", "")}
    with torch.no_grad():
        budget = {"min_iters": 1, "budget_s": 0.01} if dry_run else {"min_iters": 3, "budget_s": 1.0}
        eager_ms = time_per_call(lambda: model.predict(clip), device, **budget)
        entry["eager_ms"] = eager_ms
        entry["eager_fps"] = 1000.0 * batch / eager_ms
        if use_graph and device.type == "cuda" and eager_ms < 2000:
            try:
                graph_ms = time_cuda_graph(lambda: model.predict(clip), calls_per_graph=1, replays=3)
                entry["graph_ms"] = graph_ms
                entry["graph_fps"] = 1000.0 * batch / graph_ms
            except Exception as exc:  # e.g. a host sync inside the model breaks capture; eager numbers still stand
                entry["graph_error"] = f"{type(exc).__name__}: {exc}"
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return entry


def run_model(dry_run: bool, device: torch.device, quick: bool, deadline: float) -> list[dict]:
    results = []
    batches = (1, 2) if dry_run else (1, 32)
    backends = ("torch",) if dry_run else ("cuda", "torch")
    for backend in backends:
        for batch in batches:
            if backend == "torch" and batch > 1 and quick:
                continue
            if time.perf_counter() > deadline:
                results.append({"backend": backend, "batch": batch, "skipped": "time budget"})
                continue
            try:
                results.append(bench_model(backend, batch, device, dry_run, use_graph=True))
            except Exception as exc:
                results.append({"backend": backend, "batch": batch, "error": f"{type(exc).__name__}: {exc}"})
    return results


def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def print_report(report: dict) -> None:
    env = report.get("device", {})
    print(
        f"\n== device: {env.get('name', '?')}  copy {fmt(env.get('copy_gbps'), '.0f')} GB/s  "
        f"SFU {fmt(env.get('sfu_gops'), '.0f')} Gop/s ({env.get('sfu', {}).get('clock_source', '?')})"
    )
    parity = report.get("parity", [])
    if parity:
        skipped = [p for p in parity if "skipped" in p]
        parity = [p for p in parity if "skipped" not in p]
        bad = [p for p in parity if not p.get("ok")]
        worst32 = max((p.get("y_rel", 0.0) for p in parity if p["dtype"] == "float32"), default=None)
        worst16 = max((p.get("y_rel", 0.0) for p in parity if p["dtype"] == "float16"), default=None)
        print(
            f"== parity vs selective_scan_ref (float64): {len(parity) - len(bad)}/{len(parity)} ok; worst y error "
            f"fp32 {fmt(worst32, '.2e')} (bound {FP32_BOUND:.0e}), "
            f"fp16 {fmt(worst16, '.2e')} (bound {FP16_BOUND:.0e})"
        )
        for p in bad:
            y_rel, state_rel = p.get("y_rel", math.nan), p.get("state_rel", math.nan)
            detail = p.get("error") or f"y {y_rel:.2e} state {state_rel:.2e}"
            print(f"   FAIL {p['shape']['name']} {p['dtype']} G={p['variant']}: {detail}")
        if skipped:
            print(f"   {len(skipped)} parity checks skipped (time budget; raise --budget-s)")
    speed = report.get("speed", [])
    if speed:
        print("== kernel time (CUDA graph) vs floor and vs selective_scan_torch")
        print(
            f"   {'shape':<24}{'dtype':<9}{'kernel ms':>10}{'floor ms':>10}{'bound':>8}{'x floor':>9}"
            f"{'G2/G4/G8 ms':>22}{'torch ms':>10}{'speedup':>9}"
        )
        for s in speed:
            if "skipped" in s:
                print(f"   {s['shape']['name']:<24}{s['dtype']:<9} skipped ({s['skipped']})")
                continue
            if "error" in s:
                print(f"   {s['shape']['name']:<24}{s['dtype']:<9} ERROR {s['error']}")
                continue
            variants = "/".join(fmt(s.get(f"kernel_ms_g{g}")) for g in VARIANTS)
            print(
                f"   {s['shape']['name']:<24}{s['dtype']:<9}{fmt(s.get('kernel_ms')):>10}{fmt(s['floor_ms']):>10}"
                f"{s['bound']:>8}{fmt(s.get('ratio_to_floor'), '.2f'):>9}{variants:>22}"
                f"{fmt(s.get('torch_ms'), '.2f'):>10}{fmt(s.get('speedup_vs_torch'), '.1f'):>9}"
            )
    model = report.get("model", [])
    if model:
        print("== whole model (graph = CUDA graph replay)")
        for m in model:
            if "skipped" in m:
                print(f"   {m['backend']:<6} batch {m['batch']:<3} skipped ({m['skipped']})")
                continue
            if "error" in m:
                print(f"   {m['backend']:<6} batch {m['batch']:<3} ERROR {m['error']}")
                continue
            print(
                f"   {m['preset']} {m['dtype']} {m['backend']:<6} batch {m['batch']:<3} "
                f"eager {fmt(m['eager_ms'], '.2f')} ms "
                f"({fmt(m['eager_fps'], '.1f')} FPS)   graph {fmt(m.get('graph_ms'), '.2f')} ms "
                f"({fmt(m.get('graph_fps'), '.1f')} FPS){'  ' + m['graph_error'] if 'graph_error' in m else ''}"
            )
    for name, err in report.get("errors", {}).items():
        print(f"== {name}: ERROR {err}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: $OUT/bench_scan_cuda.json)")
    parser.add_argument("--dry-run", action="store_true", help="CPU only: check imports and code paths, tiny shapes")
    parser.add_argument("--quick", action="store_true", help="fewer variants and dtypes (for a short device lease)")
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--copy-mib", type=int, default=1024, help="size of the bandwidth-probe copy")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=170.0,
        help="time budget: items past it are recorded as skipped (parity by 35%%, speed by 70%%, model by 100%%)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out
    if out is None and os.environ.get("OUT"):
        out = Path(os.environ["OUT"]) / "bench_scan_cuda.json"
    report: dict = {"machine": machine_info(), "dry_run": args.dry_run, "errors": {}, "budget_s": args.budget_s}
    t_start = time.perf_counter()

    def deadline(fraction: float) -> float:
        return t_start + fraction * args.budget_s

    if args.dry_run:
        device = torch.device("cpu")
        attributes = None
        report["device"] = {"name": "cpu (dry run: selective_scan_torch stands in for the kernel)"}
        bandwidth, sfu = 1e10, 1e11
    else:
        if not torch.cuda.is_available():
            print("bench_scan_cuda: no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
            return 2
        from m2s2l_edge.ops import cuda_backend

        device = torch.device("cuda", torch.cuda.current_device())
        t0 = time.perf_counter()
        if not cuda_backend.is_available():
            print(f"bench_scan_cuda: {cuda_backend.unavailable_reason()}", file=sys.stderr)
            return 2
        report["extension_load_s"] = time.perf_counter() - t0
        attributes = cuda_backend.device_attributes(device.index)
        bandwidth = copy_bandwidth(device, args.copy_mib << 20)
        sfu, sfu_info = sfu_rate(device, attributes)
        report["device"] = {
            "name": torch.cuda.get_device_name(device),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
            "attributes": attributes,
            "copy_gbps": bandwidth / 1e9,
            "sfu_gops": sfu / 1e9,
            "sfu": sfu_info,
        }

    sections = (
        # Absolute deadlines: a section that finishes early leaves its time to the next one.
        ("parity", args.skip_parity, lambda: run_parity(args.dry_run, device, args.quick, deadline(0.35))),
        ("speed", args.skip_speed, lambda: run_speed(args.dry_run, device, bandwidth, sfu, args.quick, deadline(0.7))),
        ("model", args.skip_model, lambda: run_model(args.dry_run, device, args.quick, deadline(1.0))),
    )
    for name, skip, section in sections:
        if skip:
            continue
        t0 = time.perf_counter()
        try:
            report[name] = section()
        except Exception as exc:  # a section that breaks as a whole (e.g. the model import) is reported, not fatal
            report["errors"][name] = f"{type(exc).__name__}: {exc}"
            report[f"{name}_traceback"] = traceback.format_exc()
        report[f"{name}_s"] = time.perf_counter() - t0
    report["total_s"] = time.perf_counter() - t_start

    print_report(report)
    if out is not None:
        write_json(out, report)
        print(f"\nJSON: {out}")
    parity_ok = all(p.get("ok") for p in report.get("parity", []) if "skipped" not in p)
    parity_ok = parity_ok and "parity" not in report["errors"]
    return 0 if parity_ok else 1


if __name__ == "__main__":
    sys.exit(main())
