"""ONNX Runtime backend: an exported model (its metadata read from the file), on the CPU or through the CUDA EP.

The portable flavour runs on any ONNX Runtime build. A plugin-flavour model (the default export) has SelectiveScan
nodes, which ONNX Runtime has no kernel for (in deployment they run in the TensorRT plugin): here they run as custom
ops through onnxruntime-extensions (``m2s2l_edge.export.ort_scan``) that call our C++ CPU scan kernel (the pure-PyTorch
scan where the kernel cannot be built). ``scan_path`` says which ran, for the commands' summaries.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from m2s2l_edge.runtime.base import TensorSpec
from m2s2l_edge.runtime.batching import check_clips, run_in_batches

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


def _custom_op_scan_path() -> str:
    """What the SelectiveScan custom op runs (the same choice ``export.ort_scan`` makes): our C++ kernel, or the
    pure-PyTorch scan where the kernel cannot be built."""
    from m2s2l_edge.ops import cpu_kernel

    if cpu_kernel.is_available():
        return "SelectiveScan: our CPU kernel via onnxruntime-extensions"
    return (f"SelectiveScan: the pure-PyTorch scan via onnxruntime-extensions (our CPU kernel is unavailable: "
            f"{cpu_kernel.unavailable_reason()})")


class OnnxRuntimeBackend:
    """An exported M²S²L in ONNX Runtime. Shapes: clips (B, T, 3, H, W) float32 in [-1, 1] → frame_pred,
    motion_pred (B, 3, H, W) float32. A model exported with a fixed batch N takes any B: clips run in chunks of N
    (the last one padded)."""

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = "cpu",
        threads: int | None = None,
        python_scan: bool | None = None,
        optimization: str = "all",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(
                f"the onnxruntime backend needs onnxruntime ({e}): pip install 'm2s2l-edge[onnx]'") from None
        from m2s2l_edge.export.metadata import read_metadata

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {self.path} does not exist")
        if optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"unknown optimization level {optimization!r}; valid: {', '.join(OPTIMIZATION_LEVELS)}")
        self.meta = read_metadata(self.path)
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
        model: str | bytes = str(self.path)
        self.scan_path = "SelectiveScan: standard ONNX ops (portable export)"
        if self.meta.scan == "plugin":
            if python_scan is False:
                raise RuntimeError(
                    f"{self.path} is a plugin-flavour export: its SelectiveScan nodes need the TensorRT plugin or "
                    "python_scan (our CPU kernel through onnxruntime-extensions); or export with --scan portable"
                )
            import onnx

            from m2s2l_edge.export.ort_scan import python_scan_model, register_python_scan_ops

            options.register_custom_ops_library(register_python_scan_ops())
            model = python_scan_model(onnx.load(str(self.path))).SerializeToString()
            self.scan_path = _custom_op_scan_path()
        self.providers = providers_for(device)
        self.device = device
        self.threads = threads
        try:
            self.session = ort.InferenceSession(model, options, providers=self.providers)
        except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NotImplemented...)
            raise RuntimeError(f"ONNX Runtime cannot load {self.path}: {e}") from None
        (self._input,) = self.session.get_inputs()
        self._outputs = [o.name for o in self.session.get_outputs()]
        first = self._input.shape[0]
        self.batch = first if isinstance(first, int) else None  # None: dynamic batch
        logger.debug("onnxruntime session for %s: providers %s, threads %s", self.path, self.session.get_providers(),
                     threads)

    @staticmethod
    def _spec(arg) -> TensorSpec:
        shape = tuple(d if isinstance(d, int) else (d or "batch") for d in arg.shape)
        dtype = np.dtype({"tensor(float)": "float32", "tensor(float16)": "float16"}.get(arg.type, "float32")).name
        return TensorSpec(arg.name, shape, dtype)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (self._spec(self._input),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(self._spec(o) for o in self.session.get_outputs())

    @property
    def metadata(self) -> dict:
        return {**self.meta.to_dict(), "providers": self.session.get_providers(), "selective_scan": self.scan_path}

    def _run_fixed(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self._outputs, {self._input.name: clips})
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(self._outputs, values, strict=True)}

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        clips = check_clips(clips, self.inputs[0].shape)
        return run_in_batches(self._run_fixed, clips, self.batch)
