"""ONNX Runtime backend: an exported model (its metadata read from the file), on the CPU or through the CUDA EP.

The portable flavour runs on any ONNX Runtime build. A plugin-flavour model (the default export) has SelectiveScan
nodes, which run in our native ONNX Runtime op library (our C++ CPU kernel; ``scan_op`` picks it or the Python op,
see ``m2s2l_edge.runtime.ort_session``). ``scan_path`` says which ran, for the commands' summaries.
The session itself is opened by ``m2s2l_edge.runtime.ort_session``, shared with the export's parity check.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from m2s2l_edge.runtime.base import TensorSpec
from m2s2l_edge.runtime.batching import check_clips, run_in_batches
from m2s2l_edge.runtime.ort_session import open_session

logger = logging.getLogger(__name__)

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
        scan_op: str = "auto",
        optimization: str = "all",
    ) -> None:
        opened = open_session(path, device=device, threads=threads, scan_op=scan_op,
                              optimization=optimization)
        self.path, self.session, self.meta, self.providers = opened.path, opened.session, opened.meta, opened.providers
        self.scan_path = opened.scan_path
        self.device = device
        self.threads = threads
        (self._input,) = self.session.get_inputs()
        self._outputs = [o.name for o in self.session.get_outputs()]
        first = self._input.shape[0]
        self.batch = first if isinstance(first, int) else None  # None: dynamic batch

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
