"""What `eval` and `demo` print about an evaluation: per-video table, AUCs (or why there are none), where files went."""

from __future__ import annotations


def print_result(result, paths: dict, console=None, scan_path: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    auc = result.auc
    if auc is None:
        table = Table(title="anomaly scores per video (no labels)", show_edge=False)
        for col in ("video", "frames", "scored", "mean fused PSNR (dB)", "max score frame"):
            table.add_column(col, justify="left" if col == "video" else "right")
        for v in result.videos:
            fused = f"{v.fused.mean():.2f}" if len(v.fused) else "–"
            peak = str(int(v.targets[v.scores.argmax()])) if len(v.targets) else "–"
            table.add_row(v.name, str(v.frames), str(len(v.targets)), fused, peak)
        console.print(table)
        console.print("no AUC computed: the footage has no labels (pass --labels FILE to compute one)")
    else:
        table = Table(title="frame-level AUC per video", show_edge=False)
        for col in ("video", "frames", "scored", "anomalous", "AUC"):
            table.add_column(col, justify="left" if col == "video" else "right")
        for v in result.videos:
            table.add_row(v.name, str(v.frames), str(len(v.targets)), str(int(v.scored_labels.sum())),
                          "–" if v.auc is None else f"{v.auc:.4f}")
        console.print(table)
        skipped = len(auc.skipped)
        note = f" ({skipped} single-class video{'s' if skipped != 1 else ''} skipped)" if skipped else ""
        how = "the published protocol" if getattr(result, "calibration", None) is None else "scored as the camera"
        console.print(f"[bold]micro AUC {auc.micro:.4f}[/bold]  (all videos concatenated; {how})")
        macro = "n/a" if auc.videos_in_macro == 0 else f"{auc.macro:.4f}"
        console.print(f"macro AUC {macro}  (mean over {auc.videos_in_macro} of {len(result.videos)} videos{note})")
    console.print(f"score {result.scoring.score_name}, λ = {result.lam} ({result.scoring.lam_source}), "
                  f"{result.predicted_frames} frames scored in {result.seconds:.1f} s")
    if getattr(result, "motion_reference", None):
        console.print(f"motion term: normal frame change from {result.motion_reference}")
    if getattr(result, "calibration", None) is not None:
        above = sum(result.frames_above_threshold(v) for v in result.videos)
        console.print(f"normalised by the {result.normalisation}; {above} frames at or above the threshold")
    if scan_path:
        console.print(scan_path)
    if paths:
        plots = ""
        if "overview" in paths:
            plots = "; plots: " + ", ".join(str(paths[k]) for k in ("roc", "overview") if k in paths)
            plots += f", {paths['plots']}/"
        if "report" in paths:
            console.print(f"report: {paths['report']} (open in a browser: the score curves, the ROC and the frames "
                          "the model predicted worst)")
        console.print(f"results: {paths['results']}; per frame: {paths['scores']}/<video>.csv (the terms, fused "
                      f"PSNR, score) and <video>.npy (score){plots}")
