"""An ONNX Runtime session for an exported model: its metadata, execution providers, threads and optimisation level.

Shared by the ONNX Runtime backend (``m2s2l_edge.runtime.onnxruntime_backend``) and the export's parity check
(``m2s2l_edge.export.parity``), which must open a model exactly as deployment does.
A plugin-flavour model's SelectiveScan nodes have no ONNX Runtime kernel (in deployment they run in the TensorRT
plugin). Here they run as custom ops through onnxruntime-extensions (``ort_scan``) that call our C++ CPU scan kernel
(the pure-PyTorch scan where the kernel cannot be built); ``OrtModel.scan_path`` says which, for the summaries.
``python_scan=False`` refuses such a model instead.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from m2s2l_edge.artifacts.metadata import ExportMetadata, read_metadata

logger = logging.getLogger(__name__)

OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")


def providers_for(device: str) -> list:
    """ONNX Runtime execution providers for ``device``: "cpu", or "cuda" / "cuda:N" (needs onnxruntime-gpu)."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(
            f"device {device!r}: this onnxruntime has no CUDA execution provider (available: "
            f"{', '.join(ort.get_available_providers())}); pip install onnxruntime-gpu"
        )
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


@dataclass(frozen=True)
class OrtModel:
    """An exported model opened in ONNX Runtime: the session, the model's metadata and the providers asked for."""

    path: Path
    session: object  # onnxruntime.InferenceSession
    meta: ExportMetadata
    providers: list
    scan_path: str = "SelectiveScan: standard ONNX ops (portable export)"


def custom_op_scan_path() -> str:
    """What the SelectiveScan custom op runs (the choice ``ort_scan.scan_backend`` makes): our C++ kernel, or the
    pure-PyTorch scan where the kernel cannot be built."""
    from m2s2l_edge.ops import cpu_kernel

    if cpu_kernel.is_available():
        return "SelectiveScan: our CPU kernel via onnxruntime-extensions"
    return (f"SelectiveScan: the pure-PyTorch scan via onnxruntime-extensions (our CPU kernel is unavailable: "
            f"{cpu_kernel.unavailable_reason()})")


def open_session(
    path: str | os.PathLike,
    *,
    device: str = "cpu",
    threads: int | None = None,
    python_scan: bool | None = None,
    optimization: str = "all",
) -> OrtModel:
    """Open the exported ONNX model at ``path`` (its metadata read from the file) in ONNX Runtime.

    Raises FileNotFoundError for a missing file, ValueError for a bad option or a file without m2s2l-edge metadata,
    ImportError when onnxruntime is missing, RuntimeError when ONNX Runtime cannot load the model (or a plugin-flavour
    model without ``python_scan``).
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(
            f"the onnxruntime backend needs onnxruntime ({e}): pip install 'm2s2l-edge[onnx]'") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"unknown optimization level {optimization!r}; valid: {', '.join(OPTIMIZATION_LEVELS)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    meta = read_metadata(path)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    # One graph, no parallel branches worth a second pool: inter-op threads would only compete with intra-op ones.
    options.inter_op_num_threads = 1
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    model: str | bytes = str(path)
    scan_path = OrtModel.scan_path
    if meta.scan == "plugin":
        if python_scan is False:
            raise RuntimeError(
                f"{path} is a plugin-flavour export: its SelectiveScan nodes need the TensorRT plugin or our CPU "
                "kernel through onnxruntime-extensions (python_scan); or export with --scan portable"
            )
        import onnx

        from m2s2l_edge.runtime.ort_scan import python_scan_model, register_python_scan_ops

        options.register_custom_ops_library(register_python_scan_ops())
        model = python_scan_model(onnx.load(str(path))).SerializeToString()
        scan_path = custom_op_scan_path()
    providers = providers_for(device)
    try:
        session = ort.InferenceSession(model, options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NotImplemented...)
        raise RuntimeError(f"ONNX Runtime cannot load {path}: {e}") from None
    logger.debug("onnxruntime session for %s: providers %s, threads %s", path, session.get_providers(), threads)
    return OrtModel(path, session, meta, providers, scan_path)
