"""TensorRT runtime: the plugin library, the engine as a runtime ``Backend``, and a trtexec-like benchmark.

Everything that touches ``tensorrt`` or ``torch`` imports it inside the function that needs it, so this module imports
on a machine with neither (CI): the pure helpers (version parsing, plugin lookup, Jetson probes, the summary) are
tested there; the TensorRT paths are tested only where TensorRT and a CUDA GPU exist.

Device buffers are PyTorch CUDA tensors: TensorRT takes raw device addresses (``set_tensor_address``), so any CUDA
allocator works, and PyTorch's is already a dependency of the project, unlike pycuda or cuda-python.

Shapes (the ``Backend`` contract, ``runtime/base.py``):
    clips:       (B, T, 3, H, W) float32 in [-1, 1]
    frame_pred:  (B, 3, H, W), motion_pred: (B, 3, H, W), returned as float32 whatever the engine's I/O type
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from m2s2l_edge.ops import spec
from m2s2l_edge.runtime.base import TensorSpec

logger = logging.getLogger(__name__)

PLUGIN_LIB_NAME = "libm2s2l_plugins.so"
STATIC_PLUGIN_LIB_NAME = "libm2s2l_plugins_static.so"
PLUGIN_ENV = "M2S2L_PLUGIN_LIB"
INSTALL_HINT = (
    "TensorRT Python package not found: on JetPack `sudo apt install python3-libnvinfer` (and create the venv with "
    "--system-site-packages), on x86 `pip install tensorrt` (NVIDIA's index, https://pypi.nvidia.com)"
)
# The repository checkout this package runs from (editable install); plugins/build is where `plugin build` puts the
# libraries.
_REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------------------------
# TensorRT itself


def import_tensorrt():
    """``import tensorrt``, or a RuntimeError that says what to install (the CLI turns it into one line, exit 3)."""
    try:
        import tensorrt
    except ImportError as e:
        raise RuntimeError(f"{INSTALL_HINT} ({e})") from None
    return tensorrt


def parse_trt_version(version: str) -> tuple[int, int]:
    """``"10.3.0.30"`` → (10, 3). TensorRT's ``__version__`` is major.minor.patch[.build]."""
    m = re.match(r"^\s*(\d+)\.(\d+)", version)
    if not m:
        raise ValueError(f"cannot read a TensorRT version from {version!r} (expected major.minor[.patch...])")
    return int(m.group(1)), int(m.group(2))


def engine_sidecar(engine_path: str | os.PathLike) -> Path:
    """The engine's metadata JSON: ``model.engine`` → ``model.engine.json`` (the suffix kept, so that a ``.plan`` and
    an ``.engine`` of one model never share a sidecar)."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


# --------------------------------------------------------------------------------------------------------------------
# Plugin library


def plugin_search_dirs(cwd: Path | None = None) -> list[Path]:
    """Where ``find_plugin_library`` looks when neither ``--plugin`` nor ``$M2S2L_PLUGIN_LIB`` names the library:
    ``plugins/build`` (what `m2s2l-edge plugin build` makes) under the working folder and under this checkout, then
    ``build/`` (the folder of the README's plain cmake commands)."""
    cwd = cwd or Path.cwd()
    dirs: list[Path] = []
    for d in (cwd / "plugins" / "build", _REPO_ROOT / "plugins" / "build", cwd / "build", _REPO_ROOT / "build"):
        if d.resolve() not in [x.resolve() for x in dirs]:
            dirs.append(d)
    return dirs


def find_plugin_library(
    explicit: str | os.PathLike | None = None,
    *,
    env: Mapping[str, str] | None = None,
    recorded: str | os.PathLike | None = None,
    search_dirs: Sequence[Path] | None = None,
) -> Path:
    """The SelectiveScan plugin library to load: ``explicit`` (``--plugin``), else ``$M2S2L_PLUGIN_LIB``, else the
    library an engine's metadata recorded (``recorded``, if it still exists), else ``libm2s2l_plugins.so`` in
    ``search_dirs``.

    A path the user named that does not exist is a FileNotFoundError; finding nothing at all is a RuntimeError that
    says how to build the library.
    """
    env = os.environ if env is None else env
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"plugin library {path} does not exist (build it with `m2s2l-edge plugin build`)")
        return path
    if env.get(PLUGIN_ENV):
        path = Path(env[PLUGIN_ENV])
        if not path.is_file():
            raise FileNotFoundError(f"{PLUGIN_ENV}={path} does not exist")
        return path
    if recorded is not None and Path(recorded).is_file():
        return Path(recorded)
    dirs = list(search_dirs) if search_dirs is not None else plugin_search_dirs()
    for d in dirs:
        if (d / PLUGIN_LIB_NAME).is_file():
            return d / PLUGIN_LIB_NAME
    looked = ", ".join(str(d) for d in dirs)
    raise RuntimeError(
        f"TensorRT plugin library {PLUGIN_LIB_NAME} not found (looked in {looked}): build it with "
        f"`m2s2l-edge plugin build`, or pass --plugin PATH, or set {PLUGIN_ENV}"
    )


def load_plugin_library(trt, path: str | os.PathLike) -> None:
    """Register the SelectiveScan creator from ``path`` with TensorRT's plugin registry, once per process.

    ``libm2s2l_plugins.so`` goes through ``registry.load_library`` (it exports getCreators); the self-registering
    ``libm2s2l_plugins_static.so`` only needs a dlopen. Loading either when the creator is already registered fails
    inside TensorRT ("already registered"), so an existing creator is kept and the load skipped: a process that built
    an engine can run it.
    """
    import ctypes

    path = Path(path)
    registry = trt.get_plugin_registry()
    ident = (spec.OP_NAME, spec.PLUGIN_VERSION, spec.PLUGIN_NAMESPACE)
    if registry.get_creator(*ident) is not None:
        logger.debug("plugin creator %s/%s/%s already registered; not loading %s", *ident, path)
        return
    if path.name == STATIC_PLUGIN_LIB_NAME:
        # RTLD_GLOBAL like trtexec --staticPlugins; the library registers itself from a static initialiser.
        ctypes.CDLL(str(path.resolve()), mode=ctypes.RTLD_GLOBAL)
    elif registry.load_library(str(path.resolve())) is None:
        raise RuntimeError(f"TensorRT could not load the plugin library {path}; its log above says why")
    if registry.get_creator(*ident) is None:
        raise RuntimeError(
            f"{path} loaded but registered no {'/'.join(ident)} plugin creator: is it this project's "
            f"{PLUGIN_LIB_NAME} (built from plugins/ of the same version)?"
        )
    logger.info("loaded TensorRT plugin library %s", path)


# --------------------------------------------------------------------------------------------------------------------
# Machine description


def gpu_info(device: int = 0) -> dict:
    """Name and compute capability of the GPU, read through PyTorch when it sees one; "unknown" otherwise."""
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(device)
            return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}
    except ImportError:
        pass
    return {"gpu": "unknown", "compute_capability": "unknown"}


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


def read_engine_metadata(engine_path: str | os.PathLike) -> dict:
    """The engine's JSON (``<engine>.json``): the export's record (export/metadata.py schema, validated) and the
    ``engine`` section `m2s2l-edge build` adds. An engine built by trtexec can use its ONNX's ``<model>.onnx.json``."""
    from m2s2l_edge.export.metadata import ExportMetadata

    sidecar = engine_sidecar(engine_path)
    if not sidecar.is_file():
        raise FileNotFoundError(f"engine {engine_path} has no metadata file {sidecar} (written by m2s2l-edge build; "
                                "for an engine built by trtexec, copy the ONNX's <model>.onnx.json there)")
    try:
        raw = json.loads(sidecar.read_text(encoding="utf-8"))
        record = ExportMetadata.from_dict(raw).to_dict()
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{sidecar}: unreadable m2s2l-edge metadata ({type(e).__name__}: {e})") from None
    return {**record, "engine": raw.get("engine", {})}


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


def _time_launches(launch: Callable[[], None], stream, *, warmup: int, iterations: int, batch: int) -> dict:
    """Host latency (launch to completion, as trtexec's "Latency" without transfers) and GPU time (CUDA events on
    the stream, trtexec's "GPU Compute Time") of ``iterations`` launches after ``warmup`` untimed ones."""
    import time

    import torch

    from m2s2l_edge.benchmarking import summarize_latencies

    for _ in range(warmup):
        launch()
    stream.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    host, gpu = [], []
    t_begin = time.perf_counter()
    for _ in range(iterations):
        t0 = time.perf_counter()
        start.record(stream)
        launch()
        end.record(stream)
        end.synchronize()
        host.append((time.perf_counter() - t0) * 1000.0)
        gpu.append(start.elapsed_time(end))
    total_s = time.perf_counter() - t_begin
    return {
        "latency": summarize_latencies(host, batch).as_dict(),
        "gpu_compute": summarize_latencies(gpu, batch).as_dict(),
        "throughput_qps": iterations / total_s,
        "throughput_fps": iterations * batch / total_s,
    }


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

    from m2s2l_edge.benchmarking import machine_info

    if iterations < 1 or warmup < 0:
        raise ValueError(f"iterations must be >= 1 and warmup >= 0, got {iterations} and {warmup}")
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
        rows = [{"mode": "enqueue", **_time_launches(backend.enqueue, stream, warmup=warmup, iterations=iterations,
                                                     batch=batch)}]
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
    }


def _bench_graph(backend: TensorRTBackend, warmup: int, iterations: int, batch: int) -> dict:
    import torch

    stream = backend.stream
    graph = torch.cuda.CUDAGraph()
    try:
        # thread_local capture, as trtexec: another thread's CUDA calls do not invalidate the capture.
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            if not backend.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("execute_async_v3 returned False during capture")
    except RuntimeError as e:
        logger.warning("CUDA graph capture of the TensorRT enqueue failed (%s); timed without a graph only", e)
        return {"error": f"capture failed: {e}"}

    def replay() -> None:
        graph.replay()  # launches on the current stream, which is backend.stream here

    return _time_launches(replay, stream, warmup=warmup, iterations=iterations, batch=batch)


def format_summary(result: dict) -> list[str]:
    """trtexec-style summary lines of a ``bench_engine`` result."""
    lines = [
        f"TensorRT {result['tensorrt']} on {result['gpu']} (sm {result['compute_capability']}), engine "
        f"{result['engine']}, input {result['input']['name']} {tuple(result['input']['shape'])} "
        f"{result['input']['dtype']}, {result['iterations']} iterations after {result['warmup']} warm-up"
    ]
    jetson = result.get("jetson")
    if jetson:
        lines.append(f"Jetson {jetson['l4t_release']}: power mode {jetson['power_mode']}, "
                     f"jetson_clocks {jetson['jetson_clocks']}")

    def stats(s: dict) -> str:
        return (f"min = {s['min_ms']:.3f} ms, max = {s['max_ms']:.3f} ms, mean = {s['mean_ms']:.3f} ms, "
                f"median = {s['median_ms']:.3f} ms, percentile(90%) = {s['p90_ms']:.3f} ms, "
                f"percentile(99%) = {s['p99_ms']:.3f} ms")

    for row in result["rows"]:
        lines.append(f"=== {row['mode']} ===")
        if "error" in row:
            lines.append(f"not timed: {row['error']}")
            continue
        lines.append(f"Throughput: {row['throughput_qps']:.2f} qps ({row['throughput_fps']:.2f} FPS at batch "
                     f"{result['batch']})")
        lines.append(f"Latency: {stats(row['latency'])}")
        lines.append(f"GPU Compute Time: {stats(row['gpu_compute'])}")
        lines.append(f"FPS (batch / median GPU compute time): {row['gpu_compute']['fps']:.2f}")
    return lines
