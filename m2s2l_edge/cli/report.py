"""Rich text reports the commands share (an evaluation's table and AUCs: eval and demo)."""

from __future__ import annotations


def print_result(result, paths: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="frame-level AUC per video", show_edge=False)
    for col in ("video", "frames", "scored", "anomalous", "AUC"):
        table.add_column(col, justify="left" if col == "video" else "right")
    for v in result.videos:
        table.add_row(v.name, str(v.frames), str(len(v.targets)), str(int(v.scored_labels.sum())),
                      "–" if v.auc is None else f"{v.auc:.4f}")
    console.print(table)
    auc = result.auc
    skipped = len(auc.skipped)
    note = f" ({skipped} single-class video{'s' if skipped != 1 else ''} skipped)" if skipped else ""
    console.print(f"[bold]micro AUC {auc.micro:.4f}[/bold]  (all videos concatenated; the published protocol)")
    macro = "n/a" if auc.videos_in_macro == 0 else f"{auc.macro:.4f}"
    console.print(f"macro AUC {macro}  (mean over {auc.videos_in_macro} of {len(result.videos)} videos{note})")
    console.print(f"λ = {result.lam}, {result.predicted_frames} frames scored in {result.seconds:.1f} s")
    if paths:
        console.print(f"results: {paths['results']}; scores: {paths['scores']}/<video>.npy"
                      + (f"; plots: {paths['roc']}, {paths['overview']}, {paths['plots']}/" if "roc" in paths else ""))
