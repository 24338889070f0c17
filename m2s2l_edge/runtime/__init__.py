"""Inference backends behind one interface (``base.Backend``): PyTorch, ONNX Runtime and TensorRT.

``create_backend(kind, path, device=..., threads=...)`` is the one entry point; each backend module is imported only
when its kind is asked for, so importing this package pulls in neither onnxruntime nor tensorrt.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

from m2s2l_edge.deploy import KINDS
from m2s2l_edge.runtime.base import Backend, TensorSpec


def create_backend(
    kind: str,
    path: str | os.PathLike | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
    **options,
) -> Backend:
    """A backend of ``kind`` for the model at ``path``.

    - ``torch``: ``path`` is a checkpoint, or None with ``preset=...`` (fresh weights, ``seed=...``); options:
      ``preset`` (also checked against the checkpoint's), ``seed``, ``precision`` ("fp32" | "fp16", CUDA only),
      ``scan_backend``, ``dataset``, ``lam``.
    - ``onnxruntime``: ``path`` is an exported ONNX; ``device`` "cpu" or "cuda[:N]" (needs onnxruntime-gpu);
      options: ``python_scan`` (None: a plugin-flavour model's SelectiveScan nodes run through onnxruntime-extensions
      on our CPU kernel; False refuses such a model),
      ``optimization`` ("all" | "extended" | "basic" | "disabled").
    - ``tensorrt``: ``path`` is a serialized engine (``m2s2l_edge.runtime.tensorrt_backend``); options go to it.

    ``device``: None means the kind's default ("cpu" for torch and onnxruntime, "cuda" for tensorrt).
    ``threads``: intra-op CPU threads (None: the library's default). Raises ValueError for an unknown kind or bad
    options, FileNotFoundError for a missing file, RuntimeError / ImportError when the kind's library is missing.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown backend {kind!r}; valid: {', '.join(KINDS)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if kind == "torch":
        from m2s2l_edge.runtime.torch_backend import TorchBackend

        return TorchBackend(path, device=device or "cpu", threads=threads, **options)
    if kind == "onnxruntime":
        if path is None:
            raise ValueError("the onnxruntime backend needs the path of an exported .onnx model")
        from m2s2l_edge.runtime.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, device=device or "cpu", threads=threads, **options)
    return _tensorrt_backend(path, device=device, threads=threads, **options)


def _tensorrt_backend(path, *, device: str | None, threads: int | None, **options) -> Backend:
    # The TensorRT backend lives in its own module (written separately); it is looked up, not assumed.
    if importlib.util.find_spec("m2s2l_edge.runtime.tensorrt_backend") is None:
        raise RuntimeError("TensorRT backend not available: install tensorrt (and a CUDA build of PyTorch) and "
                           "m2s2l_edge.runtime.tensorrt_backend")
    if path is None:
        raise ValueError("the tensorrt backend needs the path of a serialized engine")
    module = importlib.import_module("m2s2l_edge.runtime.tensorrt_backend")
    if threads is not None:
        raise ValueError("threads: the tensorrt backend has no CPU thread pool to size")
    return module.TensorRTBackend(path, device=device or "cuda", **options)


__all__ = ["KINDS", "Backend", "TensorSpec", "create_backend"]
