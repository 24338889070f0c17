"""Inference backends behind one interface (``base.Backend``): PyTorch, ONNX Runtime, TensorRT and a Triton server.

``create_backend(kind, path, device=..., threads=...)`` is the one entry point; each backend module is imported only
when its kind is asked for, so importing this package pulls in neither onnxruntime nor tensorrt.
"""

from __future__ import annotations

import os

from m2s2l_edge.runtime.base import Backend, TensorSpec

# One name per runtime backend, in the order the CLI lists them: torch (a checkpoint or a preset), onnxruntime (an
# exported ONNX), tensorrt (a serialized engine), triton (a model served by a Triton Inference Server).
KINDS = ("torch", "onnxruntime", "tensorrt", "triton")


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
      options: ``scan_op`` ("auto": a plugin-flavour model's SelectiveScan nodes run in our native op library,
      the Python op where it cannot be built, with a warning; "native", "python", or "none" to refuse such a model),
      ``optimization`` ("all" | "extended" | "basic" | "disabled").
    - ``tensorrt``: ``path`` is a serialized engine (``m2s2l_edge.runtime.tensorrt_backend``); options go to it.
    - ``triton``: ``path`` is the server URL (``grpc://HOST:8001`` or ``http://HOST:8000``); options: ``model`` (its
      name on the server, required), ``timeout`` (s), ``retries`` (when opening), ``run_retries`` (per batch; default
      ``retries``), ``retry_wait`` (s), ``version``. The server
      places the model, so ``device`` and ``threads`` do not apply.

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
    if kind == "triton":
        if path is None:
            raise ValueError("the triton backend needs a server URL (grpc://HOST:8001 or http://HOST:8000)")
        if device is not None or threads is not None:
            raise ValueError("device / threads: a Triton server places and sizes the model itself")
        from m2s2l_edge.runtime.triton_backend import TritonBackend

        return TritonBackend(str(path), **options)
    if path is None:
        raise ValueError("the tensorrt backend needs the path of a serialized engine")
    if threads is not None:
        raise ValueError("threads: the tensorrt backend has no CPU thread pool to size")
    from m2s2l_edge.runtime.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(path, device=device or "cuda", **options)


def open_model(kind: str, path: str, *, device: str | None = None, expected_preset: str | None = None):
    """A backend for ``kind`` (torch, onnxruntime, tensorrt) reading ``path``; ``device`` None: the kind's default.

    Every kind is served by :func:`m2s2l_edge.runtime.create_backend`.
    ``expected_preset``: refuse a model of another preset (ValueError naming both).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown backend {kind!r}; valid: {', '.join(KINDS)}")
    options = {"preset": expected_preset} if kind == "torch" and expected_preset else {}
    backend = create_backend(kind, path, device=device, **options)
    check_preset(backend, path, expected_preset)
    return backend


def check_preset(backend, path, expected_preset: str | None) -> None:
    """ValueError when ``backend``'s model (read from ``path``) records a preset other than ``expected_preset``; a
    model that records none, or no expectation, passes."""
    preset = (getattr(backend, "metadata", None) or {}).get("preset")
    if expected_preset is not None and preset is not None and preset != expected_preset:
        raise ValueError(f"{path} holds preset {preset!r}, not {expected_preset!r}")


__all__ = ["KINDS", "Backend", "TensorSpec", "check_preset", "create_backend", "open_model"]
