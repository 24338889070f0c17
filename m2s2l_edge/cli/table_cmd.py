"""`m2s2l-edge table`: the paper's efficiency table rebuilt — published figures beside our count of each peer's
public architecture (``m2s2l_edge.efficiency.table``), with ``--fps`` every row timed here in the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors
from m2s2l_edge.cli.options import (
    DEFAULT_ITERATIONS,
    DEFAULT_WARMUP,
    Batch,
    Device,
    Fp16,
    Iterations,
    JsonOut,
    Out,
    Overwrite,
    Threads,
    Warmup,
)


def register(app: typer.Typer) -> None:
    app.command("table")(table)


def _print(result: dict, to_stderr: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    from m2s2l_edge.efficiency.table import table_lines

    header, cells = table_lines(result)
    keep = [0, 2, 3, 4, 5, 6, 7, 10, 11, 12]  # the terminal shows the comparison; --markdown / --json hold the rest
    t = Table(title="Efficiency: the paper's figures beside our count (GFLOPs = MACs + scan, paper convention)")
    for i in keep:
        t.add_column(header[i], justify="left" if i == 0 else "right")
    for row, r in zip(cells, result["rows"], strict=True):
        t.add_row(*(row[i] for i in keep), style="bold" if r["kind"] == "ours" else None)
    console = Console(stderr=to_stderr, width=max(140, Console().width))
    console.print(t)
    if "timing" in result:
        tm = result["timing"]
        console.print(f"FPS measured here: {tm['device']}, {tm['precision']}, batch {tm['batch']}, median of "
                      f"{tm['iterations']} after {tm['warmup']} warm-up"
                      f"{', CUDA graphs' if tm['cuda_graph'] else ''}; the paper's FPS are on its own hardware.")
    console.print("status and notes per row: --markdown FILE or --json; counting convention: docs/TABLE.md",
                  style="dim")


def table(
    fps: Annotated[bool, typer.Option("--fps", help="Also time every row here (same device, precision, batch).")]
    = False,
    device: Device = None,
    fp16: Fp16 = False,
    batch: Batch = None,
    warmup: Warmup = DEFAULT_WARMUP,
    iterations: Iterations = DEFAULT_ITERATIONS,
    threads: Threads = None,
    cuda_graph: Annotated[bool, typer.Option(
        "--cuda-graph/--no-cuda-graph", help="--fps on a GPU: also time a CUDA-graph replay (reported FPS).")] = True,
    json_out: JsonOut = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="Write the table and its notes as Markdown.")]
    = None,
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """Rebuild the paper's efficiency table: params, MACs and FLOPs of every peer from its public architecture,
    the paper's figures and the ratios beside them; --fps times each row here; --out PLOT.png draws accuracy
    against cost and speed."""
    from m2s2l_edge.cli.options import (
        check_device,
        check_distinct_paths,
        check_json_target,
        check_output_file,
        emit_json,
        json_to_stdout,
    )

    to_stdout = json_to_stdout(json_out)
    written: list[str] = []
    with user_errors(kept=lambda: f"kept {', '.join(written)}" if written else "nothing was written"):
        from m2s2l_edge.efficiency.table import TimingConfig, build_table, check_plot_path, plot_table, to_markdown

        timing = TimingConfig(device=check_device(device), half=fp16, batch=batch or 1, warmup=warmup,
                              iterations=iterations, cuda_graph=cuda_graph)
        check_json_target(json_out)
        check_distinct_paths({"--markdown": markdown, "--out": out, "--json": json_out})
        if markdown is not None:
            check_output_file(markdown, overwrite=True, flag="--markdown")
        if out is not None:
            check_plot_path(out)
            check_output_file(out, overwrite=overwrite)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)

        from m2s2l_edge.cli.progress import TimingProgress

        with TimingProgress() as bar:
            result = build_table(fps=fps, timing=timing, progress=bar.row, on_call=bar.call)
        _print(result, to_stderr=to_stdout)
        if markdown is not None:
            from m2s2l_edge.io import atomic_write_text

            atomic_write_text(markdown, to_markdown(result))
            written.append(str(markdown))
            typer.echo(f"wrote {markdown}", err=to_stdout)
        if out is not None:
            plot_table(result, out)
            written.append(str(out))
            typer.echo(f"wrote {out}", err=to_stdout)
        emit_json(result, json_out)
        if json_out is not None and not to_stdout:
            typer.echo(f"wrote {json_out}")
