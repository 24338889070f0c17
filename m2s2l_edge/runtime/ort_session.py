"""An ONNX Runtime session for an exported model: its metadata, execution providers, threads and optimisation level.

Shared by the ONNX Runtime backend (``m2s2l_edge.runtime.onnxruntime_backend``) and the export's parity check
(``m2s2l_edge.export.parity``), which must open a model exactly as deployment does.
A plugin-flavour model's SelectiveScan nodes are no standard ONNX op. Here they run in our native ONNX Runtime op
library (``m2s2l_edge.ops.ort_library``: ONNX Runtime's custom-op API around our C++ CPU kernel, registered with
``SessionOptions.register_custom_ops_library``, the way any C++ or Triton host loads it). ``scan_op`` picks the op:

- ``"auto"`` (default): the native op; where it cannot be built (no ONNX Runtime headers, no compiler) the Python op
  (``ort_scan``: onnxruntime-extensions calling the same kernel from Python, about twice as slow end to end at the
  ``small`` preset), with a warning that names the reason and the fix; ``OrtModel.scan_path`` says which ran;
- ``"native"``: the native op or an error; ``"python"``: the Python op or an error;
- ``"none"``: refuse a plugin-flavour model.
"""

from __future__ import annotations

import functools
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


SCAN_OPS = ("auto", "native", "python", "none")
NATIVE_SCAN_PATH = "SelectiveScan: our native ONNX Runtime op (C++ CPU kernel)"


def custom_op_scan_path() -> str:
    """What the Python SelectiveScan op runs (the choice ``ort_scan.scan_backend`` makes): our C++ kernel, or the
    pure-PyTorch scan where the kernel cannot be built."""
    from m2s2l_edge.ops import cpu_kernel

    if cpu_kernel.is_available():
        return "SelectiveScan: our CPU kernel via onnxruntime-extensions (Python op)"
    return (f"SelectiveScan: the pure-PyTorch scan via onnxruntime-extensions (Python op; our CPU kernel is "
            f"unavailable: {cpu_kernel.unavailable_reason()})")


def resolve_scan_op(scan_op: str) -> str:
    """"native" or "python" for ``scan_op`` (see the module docstring); the auto fallback warns once per process."""
    from m2s2l_edge.ops import ort_library

    if scan_op == "python":
        return "python"
    if scan_op == "native":
        ort_library.library()  # raises, naming why and the fix
        return "native"
    if scan_op != "auto":
        raise ValueError(f"unknown scan op {scan_op!r}; valid: auto, native, python")
    if ort_library.is_available():
        return "native"
    _warn_python_fallback(ort_library.unavailable_reason())
    return "python"


@functools.cache
def _warn_python_fallback(reason: str) -> None:
    logger.warning("the native SelectiveScan op for ONNX Runtime is unavailable (%s); running the slower Python op "
                   "through onnxruntime-extensions instead", reason)


def open_session(
    path: str | os.PathLike,
    *,
    device: str = "cpu",
    threads: int | None = None,
    scan_op: str = "auto",
    optimization: str = "all",
) -> OrtModel:
    """Open the exported ONNX model at ``path`` (its metadata read from the file) in ONNX Runtime.

    Raises FileNotFoundError for a missing file, ValueError for a bad option or a file without m2s2l-edge metadata,
    ImportError when onnxruntime is missing, RuntimeError when ONNX Runtime cannot load the model (or a plugin-flavour
    model with ``scan_op="none"``, or the op ``scan_op`` names is unavailable).
    """
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(
            f"the onnxruntime backend needs onnxruntime ({e}): pip install 'm2s2l-edge[onnx]'") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    if scan_op not in SCAN_OPS:
        raise ValueError(f"unknown scan op {scan_op!r}; valid: {', '.join(SCAN_OPS)}")
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
        if scan_op == "none":
            raise RuntimeError(
                f"{path} is a plugin-flavour export: its SelectiveScan nodes need our op library (native or Python) or "
                "the TensorRT plugin; or export with --scan portable"
            )
        if resolve_scan_op(scan_op) == "native":
            from m2s2l_edge.ops import ort_library

            options.register_custom_ops_library(str(ort_library.library()))
            scan_path = NATIVE_SCAN_PATH
        else:
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
