"""`m2s2l-edge profile`: parameters, MACs ("FLOPs" in the paper's convention), true FLOPs and FPS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)


def profile(
    preset: Annotated[str, typer.Option(help="Model preset (paper, small, tiny).")] = "paper",
    resolution: Annotated[int | None, typer.Option(help="Input side in pixels (default: the preset's).")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Batch size.")] = 1,
    ablation: Annotated[str | None, typer.Option(help="Paper ablation M1-M4 (default: full model).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda (for --fps).")] = "cpu",
    fps: Annotated[bool, typer.Option("--fps/--no-fps", help="Also time the forward pass.")] = False,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed forward passes before timing.")] = 3,
    iters: Annotated[int, typer.Option(min=1, help="Timed forward passes.")] = 10,
    scan_backend: Annotated[str, typer.Option(help="Scan backend for --fps (auto, torch, cpu, cuda, ...).")] = "auto",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON ('-' for stdout).")] = None,
) -> None:
    """Count parameters and MACs per component (the paper's FLOPs convention) and optionally measure FPS."""
    from rich.console import Console
    from rich.table import Table

    from m2s2l_edge.ops.dispatch import BACKENDS
    from m2s2l_edge.profile import PAPER_FPS, PAPER_GFLOPS, PAPER_PARAMS_M, profile_model, time_forward

    if device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"{device!r}; valid: cpu, cuda", param_hint="--device")
    if scan_backend not in BACKENDS:
        raise typer.BadParameter(f"{scan_backend!r}; valid: {', '.join(BACKENDS)}", param_hint="--scan-backend")
    overrides = {"ablation": ablation} if ablation else {}
    with user_errors():
        result = profile_model(preset, resolution=resolution, batch=batch, **overrides)
        timing = (
            time_forward(preset, resolution=resolution, batch=batch, device=device, warmup=warmup, iterations=iters,
                         **overrides, scan_backend=scan_backend)
            if fps else None
        )
    data = result.as_dict()
    if timing is not None:
        data["fps"] = timing

    if json_out is not None and str(json_out) == "-":
        typer.echo(json.dumps(data, indent=2))
        return
    console = Console()
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
    if timing is not None:
        from m2s2l_edge.benchmarking import format_summary

        console.print(format_summary(timing, title=f"forward pass on {device}"), markup=False, highlight=False)
    if json_out is not None:
        from m2s2l_edge.io import atomic_write_text

        atomic_write_text(json_out, json.dumps(data, indent=2))
        console.print(f"wrote {json_out}")
