"""The CLI's one vocabulary: shared option types, the shared checks behind them, and the list of every option.

Every command spells the same thing the same way (README, "Options"): the model to run is ``--weights`` (a
checkpoint, run by PyTorch), ``--onnx`` (ONNX Runtime), ``--engine`` (TensorRT), ``--server`` + ``--model`` (a model
served by Triton) or ``--preset`` (fresh weights); the backend follows from which one is given. ``VOCABULARY`` lists
every option any command may have; a test walks each command's ``--help`` and fails on an option not listed here.

Nothing here imports torch, onnx or tensorrt at module level: building the CLI must stay cheap.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.efficiency.benchmarking import DEFAULT_ITERATIONS, DEFAULT_WARMUP  # noqa: F401 - the CLI's defaults

# --- option types (use as `weights: Weights = None`) ---------------------------------------------------------------

Weights = Annotated[Path | None, typer.Option("--weights", help="Checkpoint (a train run's last.pt), run by PyTorch.")]
Onnx = Annotated[Path | None, typer.Option("--onnx", help="Exported ONNX model, run by ONNX Runtime.")]
Engine = Annotated[Path | None, typer.Option("--engine", help="TensorRT engine (m2s2l-edge build), run by TensorRT.")]
Preset = Annotated[str | None, typer.Option(
    "--preset", help="Model preset (paper, small, tiny): fresh weights, or with --weights the preset it must hold.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of fresh weights (--preset) or of the run.")]
Batch = Annotated[int | None, typer.Option("--batch", min=1, help="Clips per model call (default: the model's, or 1).")]
Warmup = Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs before timing.")]
Iterations = Annotated[int, typer.Option("--iterations", min=1, help="Timed runs.")]
Fp16 = Annotated[bool, typer.Option("--fp16/--fp32", help="Half precision (the scan's state stays FP32) or FP32.")]
Device = Annotated[str | None, typer.Option("--device", help="cpu, cuda or cuda:N (default: cpu; TensorRT: cuda).")]
Threads = Annotated[int | None, typer.Option("--threads", min=1, help="CPU intra-op threads (default: the library's).")]
Out = Annotated[Path | None, typer.Option("--out", help="Output file or folder.")]
JsonOut = Annotated[Path | None, typer.Option(
    "--json", help="Write the results as JSON to FILE, or to stdout with '-' (human text then goes to stderr).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out (refused without it).")]
Plugin = Annotated[Path | None, typer.Option(
    "--plugin", help="TensorRT plugin library libm2s2l_plugins.so (default: $M2S2L_PLUGIN_LIB, else plugins/build/).")]
Server = Annotated[str | None, typer.Option(
    "--server", help="Triton server, grpc://HOST:8001 or http://HOST:8000 (with --model NAME).")]
ServedModel = Annotated[str | None, typer.Option(
    "--model", help="With --server: the model's name on the Triton server (m2s2l-edge serve triton-repo).")]


def _stream_score(value: str) -> str:
    from m2s2l_edge.watch.pipeline import check_stream_score

    try:
        check_stream_score(value)
    except ValueError as e:
        raise typer.BadParameter(str(e).removeprefix(f"--score {value!r} ")) from None
    return value


StreamScore = Annotated[str, typer.Option(
    "--score", callback=_stream_score,
    help="Anomaly score: stream (the validated patch score made causal: worst window, stalls, two-sided motion term; "
         "ours) or paper (the published frame PSNRs). A calibration is fitted for one score.")]

# Every option any command may carry, with its one meaning. Keep in step with the README's option table.
VOCABULARY: dict[str, str] = {
    "--help": "show a command's options",
    "--version": "print the version and exit",
    "--verbose": "log at DEBUG level (build: also TensorRT's log at VERBOSE)",
    "-v": "short for --verbose",
    # the model to run
    "--weights": "checkpoint → PyTorch",
    "--onnx": "exported ONNX → ONNX Runtime",
    "--engine": "TensorRT engine → TensorRT",
    "--preset": "model preset: fresh weights, or the preset a checkpoint must hold",
    "--model": "an architecture from the model registry (m2s2l, mnad, ...) or, with --server, the served model "
               "(serve local: the model to load)",
    "--server": "a Triton server URL (grpc:// or http://)",
    "--seed": "seed of fresh weights, generated data or a run",
    "--ablation": "the paper's ablation M1-M4",
    "--loss-set": "the paper's loss ablation L1-L3",
    "--set": "override a model config field, KEY=VALUE",
    "--scan": "ONNX flavour: plugin (SelectiveScan nodes) or portable (standard ops)",
    "--scan-backend": "selective-scan implementation for PyTorch runs (auto, torch, cpu, op, cuda, mamba_ssm)",
    "--plugin": "TensorRT plugin library",
    # running and timing
    "--batch": "clips per model call (train: per optimisation step, over all processes under torchrun; build: "
               "the batch TensorRT tunes for)",
    "--warmup": "untimed runs before timing",
    "--iterations": "timed runs",
    "--fp16": "half precision (with --fp32 as its negation)",
    "--fp32": "full precision",
    "--int8": "INT8 by explicit quantization: a Q/DQ ONNX calibrated on --calibration-data",
    "--calibration-data": "normal footage (video, frames folder, folder of videos) that calibrates INT8",
    "--all": "every format of one model in one table (PyTorch, ONNX Runtime, INT8, TensorRT, Triton)",
    "--device": "cpu, cuda or cuda:N",
    "--threads": "CPU intra-op threads",
    "--resolution": "input side in pixels",
    "--fps": "also time the forward pass",
    "--cuda-graph": "also time a CUDA-graph replay (with --no-cuda-graph)",
    "--no-cuda-graph": "do not time a CUDA-graph replay",
    # data
    "--data": "data set root, video file, frames folder or folder of videos",
    "--dataset": "data set layout: ped2, avenue, shanghaitech, synthetic, custom",
    "--labels": "frame-label file or folder",
    "--name": "MNAD folder name when not the data set's usual one",
    "--lambda": "weight λ of the frame PSNR in the fused score",
    "--score": "anomaly score: paper (frame PSNRs, published), patch (worst-patch PSNRs, stalls, motion term, per "
               "video; ours) or stream (patch made causal, calibrated per camera; ours)",
    "--scores": "one CSV row per scored frame, to a file or '-' (stdout)",
    "--threshold": "event threshold in calibrated-score units, for every camera",
    "--stride": "step between scored / training clips",
    "--kinds": "anomaly kinds of generated test videos",
    # training
    "--epochs": "training epochs (the total, also when resuming)",
    "--lr": "initial learning rate",
    "--lr-step": "halve the learning rate every N epochs",
    "--foreground-weight": "weigh the frame loss's moving pixels 1 + W times the static background",
    "--amp": "mixed precision (with --no-amp)",
    "--no-amp": "no mixed precision",
    "--workers": "DataLoader worker processes",
    "--resume": "continue the run in --out",
    "--keep-epochs": "also keep a checkpoint per epoch",
    # outputs
    "--out": "output file or folder",
    "--json": "results as JSON to a file or '-' (stdout)",
    "--overwrite": "replace an existing --out",
    "--plots": "write the PNG plots (with --no-plots)",
    "--no-plots": "no PNG plots",
    "--check": "check parity before publishing (with --no-check)",
    "--no-check": "skip the parity check",
    "--format": "output format",
    "--opset": "ONNX opset",
    "--dynamic": "symbolic batch dimension",
    # engine building
    "--min-batch": "smallest batch of the engine's optimisation profile",
    "--max-batch": "largest batch of the engine's optimisation profile",
    "--workspace": "TensorRT builder workspace in MiB",
    "--timing-cache": "TensorRT timing cache file",
    "--jobs": "parallel build jobs",
    "-j": "short for --jobs",
    "--tensorrt-root": "TensorRT installation (include/, lib/) to build the plugin against",
    "--kernels-only": "build the CUDA kernels only, no TensorRT plugin",
    "--onnxruntime": "build the ONNX Runtime SelectiveScan op library only (CPU; no CUDA, no CMake)",
    "--static": "also build the plugin library that links libnvinfer (with --no-static)",
    "--no-static": "do not build the statically linked plugin library",
    "--arch": "CUDA architectures",
    # watch / calibrate
    "--source": "a camera or video source (repeatable)",
    "--config": "a YAML file of cameras",
    "--calibration": "a calibration file (m2s2l-edge calibrate)",
    "--events": "JSON-lines events to a file or '-'",
    "--metrics-port": "Prometheus metrics port",
    "--replay": "read files as fast as possible, deterministically",
    "--false-alarms-per-hour": "target false-alarm rate of a calibration",
    "--webhook": "POST events to this URL",
    "--mqtt": "publish events to this MQTT broker",
    "--snapshots": "folder for event snapshots",
    "--video-out": "annotated output video",
    "--keep-mb": "size limit of the snapshots and clips kept, in MB",
    "--keep-hours": "age limit of the snapshots and clips kept, in hours",
    "--read-timeout": "seconds without a frame before a live camera counts as offline",
    "--ui": "serve the web view of a running watch on [HOST:]PORT (host 127.0.0.1 unless given)",
    "--ui-token": "the token the web view asks for; required beyond loopback (or $M2S2L_UI_TOKEN)",
    "--report": "a self-contained HTML report of the run, written at its end",
    "--markdown": "the table as Markdown to a file",
    # serving
    "--repo": "a Triton model repository (serve triton-repo --out)",
    "--http-port": "the local Triton server's HTTP port",
    "--grpc-port": "the local Triton server's gRPC port",
}

# --- checks --------------------------------------------------------------------------------------------------------

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_device(value: str | None, default: str = "cpu") -> str:
    """``value`` (None: ``default``) as a device string; ValueError for a bad spelling, RuntimeError when CUDA is
    asked for and PyTorch sees no such device (imports torch only then)."""
    device = default if value is None else value.strip()
    if not _DEVICE.match(device):
        raise ValueError(f"--device {value!r}: expected cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: no CUDA device is visible to PyTorch")
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"--device {device}: PyTorch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def device_syntax(value: str | None, default: str = "cpu") -> str:
    """The spelling check of :func:`check_device` alone, for devices a library other than PyTorch opens."""
    device = default if value is None else value.strip()
    if not _DEVICE.match(device):
        raise ValueError(f"--device {value!r}: expected cpu, cuda or cuda:N")
    return device


def check_input_file(path: Path, flag: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder, not a file")
    return path


def _writable_dir(folder: Path, what: str) -> None:
    probe = folder
    while not probe.exists():  # the nearest existing ancestor decides whether the folder can be created
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotADirectoryError(f"cannot write {what}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {what}: {probe} is not writable")
    # os.access says yes to root everywhere and knows nothing of read-only mounts or pseudo file systems (/sys,
    # /proc): only creating a file there proves it. The probe is removed at once.
    try:
        fd, name = tempfile.mkstemp(prefix=".m2s2l-write-probe.", dir=probe)
    except OSError as e:
        raise PermissionError(f"cannot write {what}: {probe} is not writable ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(name)


def check_output_file(path: Path, *, overwrite: bool = True, flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be written (its folder exists or can be made; it is not a folder).
    ``overwrite=False`` refuses an existing file. Leaves nothing behind (a probe file proves the folder writable and
    is removed at once)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{flag} {path} exists; pass --overwrite to replace it")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"cannot write {flag} {path}: permission denied")
    _writable_dir(path.parent if str(path.parent) else Path("."), f"{flag} {path}")
    return path


def check_output_dir(path: Path, *, overwrite: bool = False, flag: str = "--out") -> Path:
    """Check, before any work, that folder ``path`` can be written. ``overwrite=False`` refuses a non-empty
    existing folder (so two runs never mix their files). Leaves nothing behind (see :func:`check_output_file`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{flag} {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{flag} {path} already holds files; pass --overwrite to replace them, or choose "
                              "another folder")
    _writable_dir(path, f"{flag} {path}")
    return path


def _same_path(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:  # one of them does not exist yet
        return False


def check_distinct_paths(outputs: dict[str, Path | str | None], inputs: dict[str, Path | str | None] | None = None
                         ) -> None:
    """Refuse, before any work, two outputs on one file (``--events X --json X``: one would replace or corrupt the
    other) and an output on an input (``--events`` on the video it reads). Keys name the options as the user gave
    them; None values and stdout ('-') are skipped."""
    def real(entries):
        return [(flag, Path(p)) for flag, p in (entries or {}).items() if p is not None and str(p) != "-"]

    outs, ins = real(outputs), real(inputs)
    for i, (flag, path) in enumerate(outs):
        for other, other_path in outs[:i]:
            if _same_path(path, other_path):
                raise ValueError(f"{other} and {flag} are the same file ({path}); give each output its own file")
        for other, other_path in ins:
            if _same_path(path, other_path):
                raise ValueError(f"{flag} {path} is the input {other}; writing there would destroy it")


def check_json_target(target: Path | None) -> None:
    """``--json FILE``: writable before the work starts (replaced atomically afterwards); '-' is stdout."""
    if target is not None and str(target) != "-":
        check_output_file(target, overwrite=True, flag="--json")


def json_to_stdout(target: Path | None) -> bool:
    return target is not None and str(target) == "-"


def emit_json(data, target: Path | None) -> None:
    """Write ``data`` as JSON to ``target`` atomically, or to stdout for '-'; nothing for None."""
    if target is None:
        return
    import json

    text = json.dumps(data, indent=2, default=str) + "\n"
    if json_to_stdout(target):
        typer.echo(text, nl=False)
        return
    from m2s2l_edge.io import atomic_write_text

    Path(target).parent.mkdir(parents=True, exist_ok=True)  # check_json_target found that it can be made
    atomic_write_text(target, text)


# --- the model to run ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """Which model to run and so which backend: kind is one of ``m2s2l_edge.runtime.KINDS``."""

    kind: str
    path: Path | None = None
    preset: str | None = None
    seed: int = 0
    server: str | None = None
    model: str | None = None

    @property
    def label(self) -> str:
        if self.server is not None:
            from m2s2l_edge.urls import redact

            return f"{self.model} on {redact(self.server)}"
        return str(self.path) if self.path is not None else f"preset {self.preset} (fresh weights, seed {self.seed})"


def model_source(*, weights: Path | None = None, onnx: Path | None = None, engine: Path | None = None,
                 preset: str | None = None, seed: int = 0, server: str | None = None, model: str | None = None,
                 allow_fresh: bool = True) -> ModelSource:
    """The one model a command runs, from its options; ValueError unless exactly one source is given.

    ``--preset`` alone means fresh weights (where ``allow_fresh``); beside ``--weights`` it is the preset the
    checkpoint must hold. ``--server`` needs ``--model``. Files must exist.
    """
    given = [flag for flag, value in (("--weights", weights), ("--onnx", onnx), ("--engine", engine),
                                      ("--server", server)) if value is not None]
    fresh_hint = ", or --preset NAME for fresh weights" if allow_fresh else ""
    if len(given) > 1:
        raise ValueError(f"give one model: {' and '.join(given)} were both given")
    if not given:
        if preset is not None and allow_fresh:
            from m2s2l_edge.config import get_preset

            get_preset(preset)  # unknown preset: ValueError listing the valid ones
            return ModelSource("torch", None, preset=preset, seed=seed)
        raise ValueError(f"give the model to run: --weights CHECKPOINT, --onnx MODEL.onnx, --engine MODEL.engine"
                         f"{fresh_hint}")
    if preset is not None and weights is None:
        raise ValueError(f"--preset goes with --weights (or alone, for fresh weights), not with {given[0]}: an "
                         "exported model carries its own preset")
    if model is not None and server is None:
        raise ValueError("--model NAME goes with --server URL here")
    if server is not None:
        if model is None:
            raise ValueError("--server needs --model NAME (the model's name on the server)")
        return ModelSource("triton", None, server=server, model=model)
    if weights is not None:
        return ModelSource("torch", check_input_file(weights, "--weights"), preset=preset, seed=seed)
    if onnx is not None:
        return ModelSource("onnxruntime", check_input_file(onnx, "--onnx"))
    return ModelSource("tensorrt", check_input_file(engine, "--engine"))


def open_backend(source: ModelSource, *, device: str | None = None, threads: int | None = None, **options):
    """A :class:`m2s2l_edge.runtime.Backend` for ``source`` (imports the backend's library only now)."""
    from m2s2l_edge.runtime import create_backend

    if source.kind == "torch":
        if source.path is None:
            options = {"preset": source.preset, "seed": source.seed, **options}
        elif source.preset is not None:
            options = {"preset": source.preset, **options}
        device = check_device(device)
    elif source.kind == "tensorrt":
        device = device_syntax(device, default="cuda")
    elif source.kind == "triton":
        return create_backend("triton", source.server, model=source.model, **options)
    else:
        device = device_syntax(device)
    return create_backend(source.kind, source.path, device=device, threads=threads, **options)
