"""`m2s2l-edge eval`: frame-level AUC on a test set (DESIGN.md §4), per-video scores and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors
from m2s2l_edge.cli.progress import run_with_progress
from m2s2l_edge.cli.report import print_result
from m2s2l_edge.cli.runtime_env import prefer_passive_openmp
from m2s2l_edge.deploy import KINDS as BACKENDS


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_)


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
        "--lambda", help="Weight λ of the frame PSNR (default: the model's stored λ, else the paper's per data set, "
                         "else 0.5).",
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
) -> None:
    """Score every test video and report the micro (published protocol) and macro frame-level AUC."""
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
        from m2s2l_edge.evaluate import load_test_set, open_backend, write_outputs
        from m2s2l_edge.scoring import model_lambda, resolve_lambda

        if lambda_ is not None and not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"--lambda must lie in [0, 1], got {lambda_}")
        if not path.exists():
            raise FileNotFoundError(f"{flag} {path} does not exist")
        # Data and labels first: a mismatch fails in a second, before any model work.
        videos, label_arrays = load_test_set(data, dataset, name=name, labels_path=labels)
        runner = open_backend(backend, str(path), device=device, expected_preset=preset)
        lam, lam_source = resolve_lambda(dataset, lambda_, stored=model_lambda(runner.metadata))
        result = run_with_progress(runner, videos, label_arrays, lam, batch_size)
        meta = {"dataset": dataset, "data": str(data), "backend": backend, "source": str(path),
                "lambda_source": lam_source, "title": f"({dataset})"}
        paths = write_outputs(result, out, meta=meta, plots=plots)
    print_result(result, paths)
