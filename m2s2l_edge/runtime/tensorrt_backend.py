"""TensorRT runtime: the engine as a runtime ``Backend``, and a trtexec-like benchmark (timed and summarised by
``m2s2l_edge.efficiency.benchmarking``, like every other backend).

Importing TensorRT and loading the plugin library are shared with the engine build
(``m2s2l_edge.runtime.tensorrt_lib``).
Everything that touches ``tensorrt`` or ``torch`` imports it inside the function that needs it, so this module imports
on a machine with neither (CI): the pure helpers (Jetson probes) are tested there; the TensorRT paths are tested only
where TensorRT and a CUDA GPU exist.

Device buffers are PyTorch CUDA tensors: TensorRT takes raw device addresses (``set_tensor_address``), so any CUDA
allocator works, and PyTorch's is already a dependency of the project, unlike pycuda or cuda-python.

Shapes (the ``Backend`` contract, ``runtime/base.py``):
    clips:       (B, T, 3, H, W) float32 in [-1, 1]
    frame_pred:  (B, 3, H, W), motion_pred: (B, 3, H, W), returned as float32 whatever the engine's I/O type
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np

from m2s2l_edge.artifacts.metadata import read_engine_metadata
from m2s2l_edge.runtime.base import TensorSpec
from m2s2l_edge.runtime.tensorrt_lib import find_plugin_library, gpu_info, import_tensorrt, load_plugin_library

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------------
# Machine description


def parse_nvpmodel(text: str) -> str | None:
    """``nvpmodel -q`` → the mode's name and id, e.g. "MAXN (0)"; None when the output has no mode line."""
    name = re.search(r"NV Power Mode:\s*(\S.*?)\s*$", text, re.MULTILINE)
    if not name:
        return None
    ident = re.search(r"^\s*(\d+)\s*$", text[name.end():], re.MULTILINE)
    return f"{name.group(1)} ({ident.group(1)})" if ident else name.group(1)


def parse_jetson_clocks(text: str) -> str:
    """``jetson_clocks --show`` → "on" when the GPU clock is pinned (MinFreq = MaxFreq, what jetson_clocks sets),
    "off" when it can float, "unknown" when there is no GPU line."""
    m = re.search(r"^GPU MinFreq=(\d+) MaxFreq=(\d+)", text, re.MULTILINE)
    if not m:
        return "unknown"
    return "on" if m.group(1) == m.group(2) else "off"


def _query(cmd: list[str], run: Callable[..., subprocess.CompletedProcess]) -> str | None:
    """Output of ``cmd``, else of ``sudo -n cmd`` (never prompts), else None."""
    for argv in (cmd, ["sudo", "-n", *cmd]):
        if shutil.which(argv[0]) is None:
            continue
        try:
            out = run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout
    return None


def jetson_info(
    release_file: Path = Path("/etc/nv_tegra_release"),
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> dict | None:
    """On a Jetson: the L4T release, the power mode and whether jetson_clocks pinned the clocks ("unknown" when the
    tools cannot be run, e.g. without sudo rights). None elsewhere."""
    if not release_file.is_file():
        return None
    release = release_file.read_text(encoding="utf-8", errors="replace").splitlines()
    nvp = _query(["nvpmodel", "-q"], run)
    clocks = _query(["jetson_clocks", "--show"], run)
    return {
        "l4t_release": release[0].lstrip("# ").strip() if release else "unknown",
        "power_mode": (parse_nvpmodel(nvp) if nvp else None) or "unknown",
        "jetson_clocks": parse_jetson_clocks(clocks) if clocks else "unknown",
    }


# --------------------------------------------------------------------------------------------------------------------
# Runtime backend


def _torch_dtype(np_dtype):
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
            outputs[out] = torch.empty(shape, dtype=_torch_dtype(self._dtypes[out]), device=self.device)
            self.context.set_tensor_address(out, outputs[out].data_ptr())
        return outputs

    def enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed; its log above says why")

    def _run_chunk(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        name = self._input_names[0]
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            x = torch.from_numpy(clips).to(self.device, dtype=_torch_dtype(self._dtypes[name]))
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


# --------------------------------------------------------------------------------------------------------------------
# Benchmark


def bench_engine(
    engine_path: str | os.PathLike,
    *,
    plugin: str | os.PathLike | None = None,
    device: str = "cuda",
    batch: int | None = None,
    warmup: int = 50,
    iterations: int = 500,
    cuda_graph: bool = True,
) -> dict:
    """Time one engine on random clips in [-1, 1] that stay on the GPU (like ``trtexec --noDataTransfers``), at
    ``batch`` (default: the profile's opt batch).

    Rows: ``enqueue`` (execute_async_v3 per inference) and, with ``cuda_graph``, ``cuda-graph`` (the enqueue captured
    once and replayed, which removes the launch overhead that dominates small batches). A capture that fails (an engine
    with operations not allowed during capture) is reported in its row and logged, as trtexec does.
    Returns a JSON-ready dict: rows, engine, TensorRT version, GPU and, on a Jetson, power mode and clocks.
    """
    import torch

    from m2s2l_edge.efficiency.benchmarking import load_average, machine_info, time_cuda_launches

    if iterations < 1 or warmup < 0:
        raise ValueError(f"iterations must be >= 1 and warmup >= 0, got {iterations} and {warmup}")
    load_before = load_average()
    backend = TensorRTBackend(engine_path, plugin=plugin, device=device)
    batch = int(backend.profile[1][0]) if batch is None else batch  # default: the batch the engine was tuned for
    backend.check_batch(batch)
    (spec_in,) = backend.inputs
    shape = (batch, *spec_in.shape[1:])
    stream = backend.stream
    with torch.cuda.device(backend.device), torch.cuda.stream(stream):
        clips = torch.empty(shape, dtype=_torch_dtype(np.dtype(spec_in.dtype)), device=backend.device)
        clips.uniform_(-1.0, 1.0)
        outputs = backend.bind(clips)  # addresses stay fixed for every launch and the graph below
        # TensorRT finishes lazy initialisation in the first enqueue; it must not happen inside a graph capture.
        backend.enqueue()
        stream.synchronize()
        rows = [{"mode": "enqueue", **time_cuda_launches(backend.enqueue, stream, warmup=warmup,
                                                         iterations=iterations, batch=batch)}]
        if cuda_graph:
            rows.append({"mode": "cuda-graph", **_bench_graph(backend, warmup, iterations, batch)})
    del outputs
    trt = backend._trt
    return {
        "engine": str(engine_path),
        "input": {"name": spec_in.name, "shape": list(shape), "dtype": spec_in.dtype},
        "profile": [list(s) for s in backend.profile],
        "batch": batch,
        "warmup": warmup,
        "iterations": iterations,
        "tensorrt": trt.__version__,
        **gpu_info(backend.device.index or 0),
        "jetson": jetson_info(),
        "engine_metadata": backend.metadata.get("engine", {}),
        "rows": rows,
        "machine": machine_info(),
        "load_average": {"before": load_before, "after": load_average()},
    }


def _bench_graph(backend: TensorRTBackend, warmup: int, iterations: int, batch: int) -> dict:
    from m2s2l_edge.efficiency.benchmarking import capture_cuda_graph, time_cuda_launches

    def enqueue_checked() -> None:
        if not backend.context.execute_async_v3(backend.stream.cuda_stream):
            raise RuntimeError("execute_async_v3 returned False during capture")

    try:
        # No warm-up inside: bench_engine enqueued once already (TensorRT's lazy initialisation must not be captured).
        # thread_local capture, as trtexec: another thread's CUDA calls do not invalidate the capture.
        graph = capture_cuda_graph(enqueue_checked, stream=backend.stream, warmup=0, error_mode="thread_local")
    except RuntimeError as e:
        logger.warning("CUDA graph capture of the TensorRT enqueue failed (%s); timed without a graph only", e)
        return {"error": f"capture failed: {e}"}

    def replay() -> None:
        graph.replay()  # launches on the current stream, which is backend.stream here

    return time_cuda_launches(replay, backend.stream, warmup=warmup, iterations=iterations, batch=batch)
