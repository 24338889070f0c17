"""`m2s2l-edge eval`: frame-level AUC on a test set (DESIGN.md §4), per-video scores and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)


def run_with_progress(backend, videos, labels, lam: float, batch_size: int, console=None, score=None):
    """evaluate() with one rich progress bar over every predicted frame of the test set."""
    from m2s2l_edge.cli.progress import make_progress
    from m2s2l_edge.evaluate import backend_geometry, evaluate

    clip_len, _ = backend_geometry(backend)
    total = sum(max(0, len(v) - clip_len) for v in videos)
    with make_progress(console, unit="frames") as progress:
        task = progress.add_task("scoring", total=total)
        return evaluate(
            backend, videos, labels, lam, batch_size=batch_size, score=score,
            on_video=lambda i, name, n: progress.update(task, description=f"video {name} ({i + 1}/{len(videos)})"),
            on_batch=lambda n: progress.advance(task, n),
        )


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
    method = getattr(result.score, "method", "paper")
    console.print(f"score {method}, λ = {result.lam}, {result.predicted_frames} frames scored in "
                  f"{result.seconds:.1f} s")
    if paths:
        console.print(f"results: {paths['results']}; scores: {paths['scores']}/<video>.npy"
                      + (f"; plots: {paths['roc']}, {paths['overview']}, {paths['plots']}/" if "roc" in paths else ""))


def eval_(
    data: Annotated[Path, typer.Option(help="Data set root (see DESIGN.md §4 for the layouts read).")],
    dataset: Annotated[str, typer.Option(help="ped2, avenue, shanghaitech, synthetic or custom.")],
    backend: Annotated[str, typer.Option(
        help="torch (--weights), onnxruntime (--model) or tensorrt (--engine).")] = "torch",
    weights: Annotated[Path | None, typer.Option(
        help="Checkpoint for --backend torch (a train run's last.pt).")] = None,
    model: Annotated[Path | None, typer.Option(help="ONNX model for --backend onnxruntime.")] = None,
    engine: Annotated[Path | None, typer.Option(help="TensorRT engine for --backend tensorrt.")] = None,
    preset: Annotated[str | None, typer.Option(help="Refuse a checkpoint of another preset.")] = None,
    lambda_: Annotated[float | None, typer.Option(
        "--lambda", help="Weight λ of the frame PSNR (default: the paper's per data set, 0.5 for custom/synthetic).",
    )] = None,
    labels: Annotated[Path | None, typer.Option(
        help="Label file or folder (default: searched beside the data).")] = None,
    name: Annotated[str | None, typer.Option(help="MNAD folder name when not the data set's usual one.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Clips per forward pass.")] = 8,
    device: Annotated[str | None, typer.Option(
        help="cpu or cuda (default: cpu for torch and onnxruntime, cuda for tensorrt).")] = None,
    out: Annotated[Path, typer.Option(help="Output folder: results.json, scores/, roc.png, plots/.")] = Path(
        "runs/eval"),
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the PNG plots.")] = True,
    score: Annotated[str | None, typer.Option(
        help="Anomaly score: paper (frame PSNRs, the published protocol) or patch (worst-patch PSNRs, stalled "
             "frames flagged; our addition). Default: paper on ped2/avenue/shanghaitech/synthetic, patch on custom.",
    )] = None,
) -> None:
    """Score every test video and report the micro (published protocol) and macro frame-level AUC."""
    from m2s2l_edge.cli.train_cmd import prefer_passive_openmp

    prefer_passive_openmp()
    if backend not in BACKENDS:
        raise typer.BadParameter(f"{backend!r}; valid: {', '.join(BACKENDS)}", param_hint="--backend")
    if device is not None and device not in ("cpu", "cuda"):
        raise typer.BadParameter(f"{device!r}; valid: cpu, cuda", param_hint="--device")
    needed = {"torch": ("--weights", weights), "onnxruntime": ("--model", model), "tensorrt": ("--engine", engine)}
    flag, path = needed[backend]
    if path is None:
        raise typer.BadParameter(f"--backend {backend} needs {flag}", param_hint=flag)
    others = [f for b, (f, p) in needed.items() if b != backend and p is not None]
    if others:
        raise typer.BadParameter(f"{', '.join(others)} does not go with --backend {backend} (it reads {flag})",
                                 param_hint="--backend")
    with user_errors():
        from m2s2l_edge.config import default_score_name, get_score
        from m2s2l_edge.evaluate import default_lambda, load_test_set, open_backend, write_outputs

        score_cfg = get_score(default_score_name(dataset) if score is None else score)
        # The patch score's λ was validated with it; the paper score takes the paper's λ per data set.
        lam = (score_cfg.lam if score_cfg.method == "patch" else default_lambda(dataset)) if lambda_ is None \
            else lambda_
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"--lambda must lie in [0, 1], got {lam}")
        if not path.exists():
            raise FileNotFoundError(f"{flag} {path} does not exist")
        # Data and labels first: a mismatch fails in a second, before any model work.
        videos, label_arrays = load_test_set(data, dataset, name=name, labels_path=labels)
        runner = open_backend(backend, str(path), device=device, expected_preset=preset)
        result = run_with_progress(runner, videos, label_arrays, lam, batch_size, score=score_cfg)
        meta = {"dataset": dataset, "data": str(data), "backend": backend, "source": str(path),
                "title": f"({dataset})"}
        paths = write_outputs(result, out, meta=meta, plots=plots)
    print_result(result, paths)
