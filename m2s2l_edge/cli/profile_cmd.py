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
    from m2s2l_edge.efficiency.profile import profile_model, time_forward
    from m2s2l_edge.ops.dispatch import BACKENDS

    batch = batch or 1
    overrides = {"ablation": ablation} if ablation else {}
    with user_errors():
        check_json_target(json_out)
        if scan_backend not in BACKENDS:
            raise ValueError(f"--scan-backend {scan_backend!r}; valid: {', '.join(BACKENDS)}")
        device = check_device(device) if fps else device_syntax(device)
        result = profile_model(preset, resolution=resolution, batch=batch, **overrides)
        timing = None
        if fps:
            from m2s2l_edge.cli.progress import TimingProgress

            with TimingProgress() as bar:
                timing = time_forward(preset, resolution=resolution, batch=batch, device=device, warmup=warmup,
                                      iterations=iterations, on_call=bar.call, **overrides, scan_backend=scan_backend)
    data = result.as_dict()
    if timing is not None:
        data["fps"] = timing
    console = _print(result, timing, device=device, ablation=ablation, to_stderr=json_to_stdout(json_out))
    with user_errors():
        emit_json(data, json_out)
    if json_out is not None and not json_to_stdout(json_out):
        console.print(f"wrote {json_out}")


def _print(result, timing: dict | None, *, device: str | None, ablation: str | None, to_stderr: bool):
    """The count per component, the paper's figures (and ours against them where comparable), the timing; returns
    the console it printed to ('--json -': stderr, so that stdout carries the JSON only)."""
    from rich.console import Console
    from rich.table import Table

    from m2s2l_edge.efficiency.profile import PAPER_FPS, PAPER_GFLOPS, PAPER_PARAMS_M

    console = Console(stderr=to_stderr)
    table = Table(title=f"M²S²L '{result.preset}' at {result.resolution}×{result.resolution}, batch {result.batch}")
    for col in ("component", "params (M)", "MACs (G)", "scan (G)", "paper FLOPs (G)", "true FLOPs (G)"):
        table.add_column(col, justify="left" if col == "component" else "right")

    def add(name, g, style=None):
        table.add_row(name, f"{g.params / 1e6:.3f}", f"{g.macs / 1e9:.3f}", f"{g.scan / 1e9:.3f}",
                      f"{g.paper_flops / 1e9:.3f}", f"{g.true_flops / 1e9:.3f}", style=style)

    for name, g in result.groups.items():
        add(name, g)
    add("total (ours, measured)", result.total, style="bold")
    console.print(table)
    console.print(
        "paper figures (Table 1, their hardware): "
        f"{PAPER_PARAMS_M} M parameters, {PAPER_GFLOPS} G FLOPs (= MACs), {PAPER_FPS} FPS"
    )
    against = result.against_paper(ablation)
    if against is not None:
        console.print(f"ours vs paper: parameters {against['params_pct']:+.1f} %, FLOPs {against['flops_pct']:+.1f} %")
    console.print("scan counted by formula 9·B·L·D·N per call; true FLOPs = 2·MACs + scan", style="dim")
    if timing is not None:
        from m2s2l_edge.efficiency.benchmarking import format_summary

        console.print(format_summary(timing, title=f"forward pass on {device}"), markup=False, highlight=False)
    return console
