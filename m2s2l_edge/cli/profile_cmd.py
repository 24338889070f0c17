"""`m2s2l-edge profile`: parameters, MACs ("FLOPs" in the paper's convention), true FLOPs and FPS."""

from __future__ import annotations

from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors
from m2s2l_edge.cli.options import (
    DEFAULT_ITERATIONS,
    DEFAULT_WARMUP,
    Batch,
    Device,
    Iterations,
    JsonOut,
    Warmup,
    check_device,
    check_json_target,
    device_syntax,
    emit_json,
    json_to_stdout,
)


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)


def _fps_rows(preset: str, resolution: int | None, batch: int, device: str, warmup: int, iters: int,
              overrides: dict) -> list[dict]:
    import torch

    from m2s2l_edge.benchmarking import time_callable
    from m2s2l_edge.models import create_model
    from m2s2l_edge.models.fold import optimize_for_inference

    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is visible to PyTorch (torch.cuda.is_available() is False)")
    if resolution is not None:
        overrides = {**overrides, "image_size": resolution}
    model = create_model(preset, **overrides).eval().to(device)
    optimize_for_inference(model)  # BatchNorm folded, multi-scale convolutions merged: the deployed form
    cfg = model.cfg
    clip = torch.randn(batch, cfg.clip_len, cfg.in_channels, cfg.image_size, cfg.image_size, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else None
    rows = []

    def run(m, x):
        with torch.inference_mode():
            return m.predict(x)

    rows.append({"mode": "fp32 eager", **time_callable(lambda: run(model, clip), warmup=warmup, iterations=iters,
                                                         batch=batch, synchronize=sync).as_dict()})
    if device == "cuda":
        half = model.half()
        clip_h = clip.half()
        stats = time_callable(lambda: run(half, clip_h), warmup=warmup, iterations=iters, batch=batch,
                              synchronize=sync)
        rows.append({"mode": "fp16 eager", **stats.as_dict()})
        # CUDA graph: capture one forward on static buffers, then replay (removes launch overhead at batch 1).
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):
                half.predict(clip_h)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.inference_mode():
            half.predict(clip_h)
        rows.append({"mode": "fp16 cuda-graph", **time_callable(graph.replay, warmup=warmup, iterations=iters,
                                                                  batch=batch, synchronize=sync).as_dict()})
    return rows


def profile(
    preset: Annotated[str, typer.Option("--preset", help="Model preset (paper, small, tiny).")] = "paper",
    resolution: Annotated[int | None, typer.Option(help="Input side in pixels (default: the preset's).")] = None,
    batch: Batch = None,
    ablation: Annotated[str | None, typer.Option(help="Paper ablation M1-M4 (default: full model).")] = None,
    device: Device = None,
    fps: Annotated[bool, typer.Option("--fps", help="Also time the forward pass (on --device).")] = False,
    warmup: Warmup = DEFAULT_WARMUP,
    iterations: Iterations = DEFAULT_ITERATIONS,
    scan_backend: Annotated[str, typer.Option(help="Scan backend for --fps (auto, torch, cpu, cuda, ...).")] = "auto",
    json_out: JsonOut = None,
) -> None:
    """Count parameters and MACs per component (the paper's FLOPs convention) and optionally measure FPS."""
    from rich.console import Console
    from rich.table import Table

    from m2s2l_edge.ops.dispatch import BACKENDS
    from m2s2l_edge.profile import PAPER_FPS, PAPER_GFLOPS, PAPER_PARAMS_M, profile_model

    batch = batch or 1
    overrides = {"ablation": ablation} if ablation else {}
    with user_errors():
        check_json_target(json_out)
        if scan_backend not in BACKENDS:
            raise ValueError(f"--scan-backend {scan_backend!r}; valid: {', '.join(BACKENDS)}")
        device = check_device(device) if fps else device_syntax(device)
        result = profile_model(preset, resolution=resolution, batch=batch, **overrides)
        fps_rows = (
            _fps_rows(preset, resolution, batch, device, warmup, iterations,
                      {**overrides, "scan_backend": scan_backend})
            if fps else []
        )
    data = result.as_dict()
    if fps_rows:
        from m2s2l_edge.benchmarking import machine_info

        data["fps"] = {"device": device, "rows": fps_rows, "machine": machine_info()}

    console = Console(stderr=json_to_stdout(json_out))  # '--json -': stdout carries the JSON only
    table = Table(title=f"M²S²L '{result.preset}' at {result.resolution}×{result.resolution}, batch {result.batch}")
    for col in ("component", "params (M)", "MACs (G)", "scan (G)", "paper FLOPs (G)", "true FLOPs (G)"):
        table.add_column(col, justify="left" if col == "component" else "right")

    def add(name, g, style=None):
        table.add_row(name, f"{g.params / 1e6:.3f}", f"{g.macs / 1e9:.3f}", f"{g.scan / 1e9:.3f}",
                      f"{g.paper_flops / 1e9:.3f}", f"{g.true_flops / 1e9:.3f}", style=style)

    for name, g in result.groups.items():
        add(name, g)
    total = result.total
    add("total (ours, measured)", total, style="bold")
    console.print(table)
    console.print(
        "paper figures (Table 1, their hardware): "
        f"{PAPER_PARAMS_M} M parameters, {PAPER_GFLOPS} G FLOPs (= MACs), {PAPER_FPS} FPS"
    )
    if result.preset == "paper" and result.resolution == 256 and result.batch == 1 and not ablation:
        console.print(
            f"ours vs paper: parameters {100 * (total.params / 1e6 / PAPER_PARAMS_M - 1):+.1f} %, "
            f"FLOPs {100 * (total.paper_flops / 1e9 / PAPER_GFLOPS - 1):+.1f} %"
        )
    console.print("scan counted by formula 9·B·L·D·N per call; true FLOPs = 2·MACs + scan", style="dim")
    if fps_rows:
        ft = Table(title=f"forward pass on {device} (batch {batch}, {iterations} timed after {warmup} warm-up)")
        for col in ("mode", "median ms", "p90 ms", "FPS"):
            ft.add_column(col, justify="right")
        for r in fps_rows:
            ft.add_row(r["mode"], f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['fps']:.1f}")
        console.print(ft)
    with user_errors():
        emit_json(data, json_out)
    if json_out is not None and not json_to_stdout(json_out):
        console.print(f"wrote {json_out}")
