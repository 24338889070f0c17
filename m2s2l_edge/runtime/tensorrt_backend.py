"""TensorRT runtime: a serialized engine behind the runtime ``Backend`` interface.

Importing TensorRT and loading the plugin library are shared with the engine build
(``m2s2l_edge.runtime.tensorrt_lib``); the engine's benchmark is ``m2s2l_edge.runtime.bench.bench_engine`` and the
GPU / Jetson description beside its timings ``m2s2l_edge.runtime.gpu_probes``. ``tensorrt`` and ``torch`` are
imported inside the functions that need them, so this module imports on a machine with neither (CI); the TensorRT
paths are tested only where TensorRT and a CUDA GPU exist.

Device buffers are PyTorch CUDA tensors: TensorRT takes raw device addresses (``set_tensor_address``), so any CUDA
allocator works, and PyTorch's is already a dependency of the project, unlike pycuda or cuda-python.

Shapes (the ``Backend`` contract, ``runtime/base.py``):
    clips:       (B, T, 3, H, W) float32 in [-1, 1]
    frame_pred:  (B, 3, H, W), motion_pred: (B, 3, H, W), returned as float32 whatever the engine's I/O type
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from m2s2l_edge.artifacts.metadata import read_engine_metadata
from m2s2l_edge.runtime.base import TensorSpec
from m2s2l_edge.runtime.tensorrt_lib import find_plugin_library, import_tensorrt, load_plugin_library


def torch_dtype(np_dtype):
    """The torch dtype of a numpy dtype (an engine's I/O types are numpy's, through ``trt.nptype``)."""
    import torch

    return torch.from_numpy(np.empty(0, dtype=np_dtype)).dtype


class TensorRTBackend:
    """A serialized TensorRT engine behind the ``Backend`` interface (``runtime/base.py``).

    The engine must have one input (the clip) and may have a dynamic batch (one optimisation profile); a batch outside
    the profile runs in chunks. Enqueues go to a dedicated CUDA stream: TensorRT warns against the legacy default
    stream (it synchronises with everything), and CUDA graph capture needs a non-default one.
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | os.PathLike, *, plugin: str | os.PathLike | None = None,
                 device: str = "cuda", verbose: bool = False) -> None:
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"engine {self.path} does not exist")
        self._metadata = read_engine_metadata(self.path)
        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("the TensorRT backend needs a CUDA GPU visible to PyTorch (torch.cuda.is_available() "
                               "is False); install a CUDA build of PyTorch")
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"device {device!r}: the TensorRT backend runs on cuda devices only")
        engine_meta = self._metadata.get("engine", {})
        plugin_path = None
        if engine_meta.get("plugin_required", True) or plugin is not None:
            plugin_path = find_plugin_library(plugin, recorded=engine_meta.get("plugin"))
        self._trt = trt
        self._trt_logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._trt_logger)
            if plugin_path is not None:
                # After the runtime exists (the library logs through the logger TensorRT hands it), before the
                # engine is deserialized (its plugin layers are created from the registered creator).
                load_plugin_library(trt, plugin_path)
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise RuntimeError(f"TensorRT could not deserialize {self.path} (built with another TensorRT version "
                                   "or for another GPU? see its log above)")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._input_names = [n for n in names if is_input[n]]
        self._output_names = [n for n in names if not is_input[n]]
        if len(self._input_names) != 1:
            raise ValueError(f"{self.path}: expected one input (the clip), found {self._input_names}")
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._shapes = {n: tuple(self.engine.get_tensor_shape(n)) for n in names}  # -1 marks a dynamic dimension
        name = self._input_names[0]
        # (min, opt, max) of profile 0; a static input has min = opt = max = its shape.
        self.profile = tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(name, 0)) \
            if -1 in self._shapes[name] else (self._shapes[name],) * 3

    # -- Backend interface ------------------------------------------------------------------------------------------
    def _spec(self, name: str) -> TensorSpec:
        shape = tuple("batch" if d == -1 else int(d) for d in self._shapes[name])
        return TensorSpec(name=name, shape=shape, dtype=self._dtypes[name].name)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(self._spec(n) for n in self._input_names)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(self._spec(n) for n in self._output_names)

    @property
    def metadata(self) -> dict:
        return self._metadata

    @property
    def tensorrt_version(self) -> str:
        return self._trt.__version__

    def check_batch(self, batch: int) -> None:
        lo, hi = int(self.profile[0][0]), int(self.profile[2][0])
        if not lo <= batch <= hi:
            raise ValueError(f"batch {batch} is outside the engine's profile {lo}..{hi} (rebuild with "
                             "--min-batch/--max-batch to change it)")

    def bind(self, clips):
        """Set the input shape and every tensor address for ``clips`` (a CUDA tensor of the engine's input type and
        shape); returns the freshly allocated output tensors by name. Enqueue with ``enqueue()`` afterwards."""
        import torch

        name = self._input_names[0]
        if not self.context.set_input_shape(name, tuple(clips.shape)):
            raise ValueError(f"TensorRT rejected input shape {tuple(clips.shape)} for {name!r} "
                             f"(engine: {self._shapes[name]}, profile {self.profile})")
        self.context.set_tensor_address(name, clips.data_ptr())
        outputs = {}
        for out in self._output_names:
            shape = tuple(self.context.get_tensor_shape(out))
            outputs[out] = torch.empty(shape, dtype=torch_dtype(self._dtypes[out]), device=self.device)
            self.context.set_tensor_address(out, outputs[out].data_ptr())
        return outputs

    def enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed; its log above says why")

    def _run_chunk(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        name = self._input_names[0]
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            x = torch.from_numpy(clips).to(self.device, dtype=torch_dtype(self._dtypes[name]))
            outputs = self.bind(x)
            self.enqueue()
            self.stream.synchronize()
            return {n: t.float().cpu().numpy() for n, t in outputs.items()}

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """``clips`` (B, T, 3, H, W) → {output name: float32 array}. A B outside the profile runs in chunks of its
        maximum batch (the last one padded), like a fixed-batch ONNX in the other backends."""
        from m2s2l_edge.runtime.batching import check_clips, run_in_batches

        clips = check_clips(clips, self.inputs[0].shape)
        lo, hi = int(self.profile[0][0]), int(self.profile[2][0])
        return run_in_batches(self._run_chunk, clips, None if lo <= clips.shape[0] <= hi else hi)

