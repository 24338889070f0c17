"""Every format one model deploys in, timed side by side (`m2s2l-edge bench --all`).

From one model (a checkpoint or a preset's fresh weights) ``compare_formats`` exports what each format needs into a
temporary folder and opens it: PyTorch eager (the model as trained) and PyTorch's rewritten inference model, ONNX
Runtime on the portable export, on the plugin export (SelectiveScan nodes in our native op) and on the INT8 (Q/DQ)
export, TensorRT FP16 and INT8 engines where TensorRT and a GPU exist, and a Triton server given by URL. Every format
that opened is timed on the same clips, batch and thread count, in one run, interleaved (A B C, C B A, ...: a change
of load on a shared machine hits all alike), and compared with PyTorch FP32 (eager) on clips of real footage where
there is some: the largest absolute difference of frame_pred and motion_pred, and that relative to their magnitude.
With labelled footage (``data`` and ``labels``) each format also scores it through the evaluation every command uses
(``m2s2l_edge.evaluation.run.evaluate``) and reports the frame-level micro AUC. A format that cannot run gets a row
that says why.

INT8 needs normal footage to calibrate on: ``calibration_data``, else the training split of ``data``, else a rendered
normal surveillance video (``m2s2l_edge.data.synthetic``), which the row's note then names.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# (key, runtime, precision, what it is), in table order. "pytorch" is the reference of the ratio and the parity.
FORMATS = (
    ("pytorch", "torch", "fp32", "PyTorch eager, the model as trained"),
    ("pytorch-inference", "torch", "fp32", "PyTorch, BatchNorm folded and multi-scale convolutions merged"),
    ("ort-portable", "onnxruntime", "fp32", "ONNX Runtime, portable export (scans as standard ONNX ops)"),
    ("ort-plugin", "onnxruntime", "fp32", "ONNX Runtime, plugin export (SelectiveScan nodes, our op)"),
    ("ort-int8", "onnxruntime", "int8", "ONNX Runtime, INT8 Q/DQ export of the plugin flavour"),
    ("tensorrt-fp16", "tensorrt", "fp16", "TensorRT FP16 engine with our SelectiveScan plugin"),
    ("tensorrt-int8", "tensorrt", "int8", "TensorRT engine of the INT8 Q/DQ export"),
    ("triton", "triton", "-", "the model a Triton server serves (--server, --model)"),
)
REFERENCE = "pytorch"


@dataclass(frozen=True)
class CompareConfig:
    """What to compare. ``threads`` None: PyTorch's current intra-op thread count, given to every CPU format."""

    weights: str | None = None
    preset: str | None = None
    seed: int = 0
    batch: int = 1
    threads: int | None = None
    warmup: int = 3
    iterations: int = 20
    device: str = "cpu"
    calibration_data: str | None = None
    data: str | None = None
    labels: str | None = None
    dataset: str = "custom"
    server: str | None = None
    served_model: str | None = None
    plugin: str | None = None  # TensorRT plugin library

    def __post_init__(self) -> None:
        if self.weights is None and self.preset is None:
            raise ValueError("give a checkpoint (--weights) or a preset (--preset) to compare formats")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.iterations < 1 or self.warmup < 0:
            raise ValueError(f"iterations must be >= 1 and warmup >= 0, got {self.iterations} and {self.warmup}")
        if (self.server is None) != (self.served_model is None):
            raise ValueError("--server and --model go together")
        if self.labels is not None and self.data is None:
            raise ValueError("--labels goes with --data")
        if self.device != "cpu":
            raise ValueError(f"device {self.device!r}: bench --all compares on the CPU; TensorRT rows use the GPU")


@dataclass
class _Row:
    key: str
    runtime: str
    precision: str
    description: str
    status: str = "ok"  # "ok" | "unavailable" | "failed"
    reason: str = ""
    note: str = ""
    parity: dict | None = None  # {"max_abs", "rel"} against the reference row
    auc: float | None = None  # frame-level micro AUC on the labelled footage
    backend: object = None

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "backend"}


def _open_rows(cfg: CompareConfig, model, source, workdir: Path, calibration, threads: int,
               progress: Callable[[str], None]) -> list[_Row]:
    """Every format's row with its backend opened, or the reason it could not be."""
    from m2s2l_edge.export.onnx_export import ExportConfig, export_and_check
    from m2s2l_edge.runtime import create_backend

    rows = [_Row(*spec) for spec in FORMATS]
    by_key = {r.key: r for r in rows}
    exports: dict[str, Path] = {}

    def export(scan: str) -> Path:
        if scan not in exports:
            progress(f"exporting the {scan} flavour")
            path, _ = export_and_check(model, workdir / f"{scan}.onnx", ExportConfig(scan=scan, batch=cfg.batch),
                                       source=source, dataset=cfg.dataset, check=False)
            exports[scan] = path
        return exports[scan]

    def int8() -> Path:
        if "int8" not in exports:
            from m2s2l_edge.export.quantize import export_int8

            progress(f"quantizing to INT8 on {calibration.source}")
            exports["int8"], _, _ = export_int8(model, workdir / "int8.onnx", ExportConfig(scan="plugin",
                                                                                           batch=cfg.batch),
                                                calibration, source=source, dataset=cfg.dataset, check=False,
                                                threads=threads)
        return exports["int8"]

    torch_options = ({"preset": cfg.preset} if cfg.preset else {}) | {"seed": cfg.seed, "dataset": cfg.dataset}

    def tensorrt(onnx_path: Path, fp16: bool):
        from m2s2l_edge.export.engine import EngineConfig, build_engine
        from m2s2l_edge.runtime.tensorrt_lib import import_tensorrt

        import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device is visible to PyTorch")
        engine = onnx_path.with_suffix(".fp16.engine" if fp16 else ".engine")
        progress(f"building the TensorRT engine {engine.name}")
        build_engine(onnx_path, engine, EngineConfig(fp16=fp16, min_batch=cfg.batch, opt_batch=cfg.batch,
                                                     max_batch=cfg.batch, plugin=cfg.plugin))
        return create_backend("tensorrt", engine, plugin=cfg.plugin)

    openers = {
        "pytorch": lambda: create_backend("torch", cfg.weights, threads=threads, optimize=False, **torch_options),
        "pytorch-inference": lambda: create_backend("torch", cfg.weights, threads=threads, **torch_options),
        "ort-portable": lambda: create_backend("onnxruntime", export("portable"), threads=threads),
        "ort-plugin": lambda: create_backend("onnxruntime", export("plugin"), threads=threads),
        "ort-int8": lambda: create_backend("onnxruntime", int8(), threads=threads),
        "tensorrt-fp16": lambda: tensorrt(export("plugin"), True),
        "tensorrt-int8": lambda: tensorrt(int8(), False),
        "triton": _triton_opener(cfg),
    }
    for key, opener in openers.items():
        row = by_key[key]
        try:
            row.backend = opener()
        except (ImportError, RuntimeError, FileNotFoundError, ValueError, OSError) as e:
            row.status = "unavailable" if isinstance(e, (ImportError, RuntimeError)) else "failed"
            row.reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            logger.info("%s: %s", key, row.reason)
            continue
        meta = getattr(row.backend, "metadata", None) or {}
        row.note = meta.get("selective_scan", "") or ""
        if key == "ort-int8":
            row.note = f"{row.note}; calibrated on {calibration.source} ({len(calibration.clips)} clips)"
    return rows


def _triton_opener(cfg: CompareConfig) -> Callable[[], object]:
    def opener():
        if cfg.server is None:
            raise RuntimeError("no server given (--server URL --model NAME: a running Triton serving this model)")
        from m2s2l_edge.runtime import create_backend

        return create_backend("triton", cfg.server, model=cfg.served_model)

    return opener


def _calibration(cfg: CompareConfig, clip_len: int, image_size: int, workdir: Path):
    """INT8's calibration footage: --calibration-data, else --data's training split, else rendered normal footage."""
    from m2s2l_edge.export.quantize import calibration_clips

    if cfg.calibration_data is not None:
        return calibration_clips(cfg.calibration_data, clip_len, image_size)
    if cfg.data is not None and Path(cfg.data).is_dir():
        from m2s2l_edge.data.layouts import discover

        # Only a separate training split is normal footage; a lone test video or folder is not.
        try:
            train = {v.path for v in discover(cfg.data, "custom", "train")}
            test = {v.path for v in discover(cfg.data, "custom", "test")}
        except (FileNotFoundError, ValueError) as e:
            train, test = set(), set()
            logger.info("no footage under %s for INT8 (%s)", cfg.data, e)
        if train and not train & test:
            return calibration_clips(cfg.data, clip_len, image_size)
        logger.info("%s has no training split apart from its test videos: INT8 calibrates on rendered footage",
                    cfg.data)
    import cv2

    from m2s2l_edge.data.synthetic import render_video

    folder = workdir / "rendered_normal_footage"
    folder.mkdir()
    video = render_video(size=image_size, frames=4 * (clip_len + 1) + 16, seed=cfg.seed)
    for i, frame in enumerate(video.frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return calibration_clips(folder, clip_len, image_size)


def _parity(rows: list[_Row], clips: np.ndarray) -> None:
    """Each row's outputs on ``clips`` against the reference row's (PyTorch FP32 eager)."""
    ref_row = next(r for r in rows if r.key == REFERENCE)
    if ref_row.status != "ok":
        return
    want = ref_row.backend.run(clips)
    for row in rows:
        if row.status != "ok":
            continue
        try:
            got = row.backend.run(clips)
        except (RuntimeError, ValueError) as e:
            row.status, row.reason = "failed", f"run failed: {e}"
            continue
        worst_abs = max(float(np.abs(got[k] - want[k]).max()) for k in want)
        scale = max(float(np.abs(want[k]).max()) for k in want)
        row.parity = {"max_abs": worst_abs, "rel": worst_abs / scale if scale else 0.0}


def _frame_auc(rows: list[_Row], cfg: CompareConfig, progress: Callable[[str], None]) -> dict:
    """Frame-level micro AUC of every row on the labelled footage, through ``evaluate`` (the eval command's path)."""
    from m2s2l_edge.config import default_score_name, get_score
    from m2s2l_edge.evaluation.datasets import load_footage
    from m2s2l_edge.evaluation.run import evaluate

    videos, labels = load_footage(cfg.data, cfg.dataset, labels_path=cfg.labels)
    if labels is None:
        raise ValueError(f"--data {cfg.data} has no frame labels (give --labels)")
    score = get_score(default_score_name(cfg.dataset))
    info = {"score": score.method, "videos": len(videos)}
    for row in rows:
        if row.status != "ok":
            continue
        # What eval does with its defaults (the data set's default score, no --lambda), resolved the one way.
        progress(f"scoring {len(videos)} videos with {row.key}")
        row.auc = evaluate(row.backend, videos, labels, batch_size=cfg.batch, score=score,
                           dataset=cfg.dataset).auc.micro
    return info


def compare_formats(cfg: CompareConfig, progress: Callable[[str], None] | None = None) -> dict:
    """Open, check and time every format of ``cfg``'s model; a JSON-ready dict (``format_table`` prints it)."""
    import torch

    from m2s2l_edge.efficiency.benchmarking import load_average, machine_info, time_interleaved
    from m2s2l_edge.export.onnx_export import load_source_model

    say = progress or (lambda message: logger.info("%s", message))
    threads = cfg.threads or torch.get_num_threads()
    model, source = load_source_model(cfg.weights, cfg.preset, cfg.seed)
    clip_len, size = model.cfg.clip_len, model.cfg.image_size
    with tempfile.TemporaryDirectory(prefix="m2s2l_formats_") as tmp:
        workdir = Path(tmp)
        calibration = _calibration(cfg, clip_len, size, workdir)
        rows = _open_rows(cfg, model, source, workdir, calibration, threads, say)
        # Parity on real footage (the calibration clips, which have T + 1 frames: the model reads the first T).
        real = calibration.clips[: cfg.batch, :-1]
        if len(real) < cfg.batch:
            real = np.concatenate([real, np.repeat(real[-1:], cfg.batch - len(real), axis=0)])
        say("comparing every format's outputs with PyTorch FP32")
        _parity(rows, np.ascontiguousarray(real))
        clips = np.random.default_rng(cfg.seed).uniform(-1, 1, (cfg.batch, clip_len, 3, size, size)).astype(
            np.float32)
        timed = {r.key: (lambda b=r.backend: b.run(clips)) for r in rows if r.status == "ok"}
        load_before = load_average()
        say(f"timing {len(timed)} formats interleaved ({cfg.warmup} warm-up + {cfg.iterations} runs each)")
        stats = time_interleaved(timed, warmup=cfg.warmup, iterations=cfg.iterations, batch=cfg.batch)
        load_after = load_average()
        auc_info = _frame_auc(rows, cfg, say) if cfg.labels is not None or cfg.data is not None else None
        reference = stats.get(REFERENCE)
        out_rows = []
        for row in rows:
            d = row.as_dict()
            s = stats.get(row.key)
            d["latency"] = s.as_dict() if s is not None else None
            d["ratio_to_pytorch"] = reference.median_ms / s.median_ms if s is not None and reference else None
            out_rows.append(d)
    return {
        "model": {"source": source.description, "preset": model.cfg.name, "image_size": size, "clip_len": clip_len},
        "batch": cfg.batch, "threads": threads, "device": cfg.device, "warmup": cfg.warmup,
        "iterations": cfg.iterations,
        "calibration": {"source": calibration.source, "sha256": calibration.sha256,
                        "clips": int(len(calibration.clips))},
        "auc": auc_info,
        "rows": out_rows,
        "load_average": {"before": load_before, "after": load_after},
        "machine": machine_info(),
    }


def _cells(row: dict) -> list[str]:
    lat = row["latency"]
    par = row.get("parity")
    auc = row.get("auc")
    if row["status"] != "ok":
        return [row["key"], row["precision"], "-", "-", "-", "-", "-", "-", f"{row['status']}: {row['reason']}"]
    return [
        row["key"], row["precision"],
        f"{lat['median_ms']:.1f}", f"{lat['p90_ms']:.1f}", f"{lat['fps']:.1f}",
        f"{row['ratio_to_pytorch']:.2f}x" if row["ratio_to_pytorch"] else "-",
        f"{par['max_abs']:.2g} ({par['rel']:.1e})" if par else "-",
        f"{auc:.4f}" if auc is not None else "-",
        row["note"],
    ]


_HEADER = ["format", "precision", "median ms", "p90 ms", "FPS", "vs PyTorch", "max |Δ| (rel) vs PyTorch FP32",
           "frame AUC", "notes"]


def _caption(result: dict) -> str:
    m, load = result["model"], result["load_average"]
    return (f"{m['preset']} at {m['image_size']} px ({m['source']}), batch {result['batch']}, {result['threads']} "
            f"threads, {result['device']}; {result['iterations']} interleaved runs per format after "
            f"{result['warmup']} warm-up; load average {load['before']} -> {load['after']}; "
            f"{result['machine'].get('cpu_model', result['machine'].get('processor'))}")


def format_table(result: dict) -> str:
    """The comparison as an aligned text table with a caption."""
    rows = [_HEADER] + [_cells(r) for r in result["rows"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    return "\n".join([*lines, "", _caption(result)])


def to_markdown(result: dict) -> str:
    """The comparison as a Markdown table with its caption."""
    rows = [_cells(r) for r in result["rows"]]
    out = ["| " + " | ".join(_HEADER) + " |", "|" + "|".join("---" for _ in _HEADER) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n\n" + _caption(result) + "\n"


__all__ = ["FORMATS", "REFERENCE", "CompareConfig", "compare_formats", "format_table", "to_markdown"]
