"""ONNX → TensorRT engine with the TensorRT Python API (what `m2s2l-edge build` runs).

The steps are trtexec's: load the SelectiveScan plugin library, parse the ONNX, set the precision, the workspace, an
optimisation profile for the batch range and a timing cache, build, and write the engine with a metadata JSON beside
it (model config and λ from the ONNX, TensorRT version, GPU, flags, plugin). Every decision that does not need
TensorRT is a pure function of plain values (``plan_precision``, ``profile_shapes``, ``engine_metadata``), tested
without it.

Precision (TensorRT 10 vs 11): TensorRT 10 builds an FP16 engine from an FP32 ONNX with the FP16 builder flag (weak
typing: TensorRT picks per layer). TensorRT 11 removed that flag: every network is strongly typed, so the types in
the ONNX are the engine's, and an FP16 engine needs an FP16 export (`m2s2l-edge export --fp16`: an FP16 graph behind
FP32 inputs and outputs, told apart by its metadata). An FP16 export is built strongly typed on both versions, so
that what it keeps in FP32 on purpose (the scan's A, D and delta_bias, the casts around the scan state) stays FP32.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from m2s2l_edge.ops import spec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """How to build one engine. The batch range becomes the optimisation profile of the clip input."""

    fp16: bool = True
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 1
    workspace_mib: int = 1024  # builder scratch memory; small enough for an 8 GB Orin Nano
    timing_cache: Path | None = None  # loaded when it exists, saved after the build
    plugin: Path | None = None  # None: $M2S2L_PLUGIN_LIB or plugins/build (runtime.tensorrt_lib)
    verbose: bool = False  # TensorRT's own log at VERBOSE instead of WARNING

    def __post_init__(self) -> None:
        if self.min_batch < 1:
            raise ValueError(f"min batch must be >= 1, got {self.min_batch}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"batch range must satisfy min <= opt <= max, got min {self.min_batch}, opt {self.opt_batch}, "
                f"max {self.max_batch}"
            )
        if self.workspace_mib <= 0:
            raise ValueError(f"workspace must be > 0 MiB, got {self.workspace_mib}")

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class PrecisionPlan:
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED
    fp16_flag: bool  # BuilderFlag.FP16 (TensorRT 10 only)
    precision: str  # "fp16", "fp32", "int8" or "int8+fp16": what the engine computes in
    int8_flag: bool = False  # BuilderFlag.INT8 (TensorRT 10, for an explicitly quantized, weakly typed network)


def export_engine_config(*, fp16: bool, batch: int, dynamic: bool, plugin: Path | None = None) -> EngineConfig:
    """The engine `export --format engine` builds from its own ONNX: it computes in the export's precision; a fixed
    batch is the whole optimisation profile, a dynamic one (``--dynamic``) gets the profile 1..``batch``."""
    return EngineConfig(fp16=fp16, min_batch=1 if dynamic else batch, opt_batch=batch, max_batch=batch, plugin=plugin)


def check_build_ready(scan: str, plugin: Path | None = None) -> None:
    """Before a slow export whose engine is built afterwards: TensorRT imports and, for the plugin flavour, the
    SelectiveScan plugin library is found (each raises the runtime's one-line error otherwise)."""
    from m2s2l_edge.runtime.tensorrt_lib import find_plugin_library, import_tensorrt

    import_tensorrt()
    if scan == "plugin":
        find_plugin_library(plugin)


def plan_precision(trt_version: str, *, fp16: bool, onnx_precision: str) -> PrecisionPlan:
    """Network and builder flags for a TensorRT version (``trt.__version__``) and the precision the ONNX was exported
    in (its metadata's ``precision``: an ``--fp16`` export computes in FP16 behind FP32 inputs and outputs; an
    ``--int8`` export is a Q/DQ graph, explicit quantization, whose Q/DQ pairs fix which layers run in int8)."""
    from m2s2l_edge.runtime.tensorrt_lib import parse_trt_version

    major, _ = parse_trt_version(trt_version)
    if major < 10:
        raise RuntimeError(f"TensorRT {trt_version} is too old: the SelectiveScan plugin is an IPluginV3, which "
                           "needs TensorRT >= 10.0 (JetPack >= 6.1)")
    if onnx_precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"the ONNX's precision is {onnx_precision!r}; expected fp32, fp16 or int8")
    if onnx_precision == "int8":
        # Explicit quantization: the Q/DQ pairs decide which layers run in int8; the rest follows the network's
        # typing. TensorRT 11 is strongly typed only (the float layers stay FP32); TensorRT 10 builds it weakly typed
        # with the INT8 flag, and with the FP16 flag the float layers may run in FP16 (the plugin keeps FP16 / FP32
        # I/O).
        if major >= 11:
            if fp16:
                raise ValueError(f"TensorRT {trt_version} has no FP16 builder flag (networks are strongly typed): "
                                 "build the INT8 ONNX with --fp32 (its float layers stay FP32)")
            return PrecisionPlan(strongly_typed=True, fp16_flag=False, precision="int8")
        return PrecisionPlan(strongly_typed=False, fp16_flag=fp16, precision="int8+fp16" if fp16 else "int8",
                             int8_flag=True)
    if onnx_precision == "fp16":
        if not fp16:
            raise ValueError("the ONNX is FP16 (exported with --fp16), so its engine is FP16: drop --fp32, or "
                             "export without --fp16 for an FP32 engine")
        return PrecisionPlan(strongly_typed=True, fp16_flag=False, precision="fp16")
    if major >= 11:
        if fp16:
            raise ValueError(f"TensorRT {trt_version} has no FP16 builder flag (networks are strongly typed): export "
                             "an FP16 ONNX with `m2s2l-edge export --fp16`, or build an FP32 engine with --fp32")
        return PrecisionPlan(strongly_typed=True, fp16_flag=False, precision="fp32")
    return PrecisionPlan(strongly_typed=False, fp16_flag=fp16, precision="fp16" if fp16 else "fp32")


def profile_shapes(input_name: str, input_shape: Sequence[int], cfg: EngineConfig):
    """(min, opt, max) shapes of the clip input for ``cfg``'s batch range, or None when the ONNX is static.

    ``input_shape`` uses -1 for a dynamic dimension. Only the batch may be dynamic: the model is built for one
    resolution and clip length.
    """
    shape = tuple(int(d) for d in input_shape)
    if any(d < 0 for d in shape[1:]):
        raise ValueError(f"input {input_name!r} {shape}: only the batch dimension may be dynamic; re-export with a "
                         "fixed resolution and clip length")
    if shape[0] >= 0:
        if (cfg.min_batch, cfg.opt_batch, cfg.max_batch) != (shape[0],) * 3:
            raise ValueError(
                f"the ONNX input {input_name!r} has a fixed batch of {shape[0]} {shape}; build it with "
                f"--min-batch/--batch/--max-batch {shape[0]}, or re-export with a dynamic batch"
            )
        return None
    rest = shape[1:]
    return (cfg.min_batch, *rest), (cfg.opt_batch, *rest), (cfg.max_batch, *rest)


@dataclass(frozen=True)
class OnnxInfo:
    input_name: str
    input_shape: tuple[int, ...]  # -1 for a dynamic dimension
    precision: str  # what the export computes in ("fp32" | "fp16"), from its metadata
    scan_nodes: int  # SelectiveScan nodes: the plugin is needed only when there are some
    metadata: dict  # the exporter's record (m2s2l_edge.artifacts.metadata), carried into the engine's JSON


def read_onnx_info(path: str | os.PathLike) -> OnnxInfo:
    """Input, precision, SelectiveScan count and metadata of an ONNX exported by m2s2l-edge (weights not loaded).

    The export's metadata is required: the engine's JSON repeats it, and every runtime backend reads the model config
    and λ from it.
    """
    try:
        import onnx
    except ImportError as e:
        raise RuntimeError(f"reading the ONNX needs the onnx package: pip install onnx ({e})") from None
    from m2s2l_edge.artifacts.metadata import read_metadata

    path = Path(path)
    meta = read_metadata(path)  # ValueError for a file that is not ONNX or carries no m2s2l-edge metadata
    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one input (the clip), found {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    scans = sum(1 for n in model.graph.node if n.op_type == spec.OP_NAME and n.domain == spec.ONNX_DOMAIN)
    return OnnxInfo(inputs[0].name, shape, meta.precision, scans, meta.to_dict())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def engine_metadata(
    model_metadata: dict,
    *,
    onnx_path: str | os.PathLike,
    onnx_sha256: str,
    input_name: str,
    profile: tuple | None,
    trt_version: str,
    gpu: dict,
    plan: PrecisionPlan,
    cfg: EngineConfig,
    plugin: str | os.PathLike | None,
    scan_nodes: int,
) -> dict:
    """The engine's JSON: the exporter's model metadata (config, λ, normalisation) plus an ``engine`` section that
    says what the engine was built from, with what and for which GPU."""
    return {
        **model_metadata,
        "engine": {
            "onnx": str(onnx_path),
            "onnx_sha256": onnx_sha256,
            "tensorrt": trt_version,
            **gpu,
            "precision": plan.precision,
            "strongly_typed": plan.strongly_typed,
            "builder_flags": ["FP16"] if plan.fp16_flag else [],
            "workspace_mib": cfg.workspace_mib,
            "input": input_name,
            "profile": None if profile is None else {k: list(s) for k, s in zip(("min", "opt", "max"), profile,
                                                                               strict=True)},
            "plugin": None if plugin is None else str(Path(plugin).resolve()),
            "plugin_required": scan_nodes > 0,
            "scan_nodes": scan_nodes,
            "timing_cache": None if cfg.timing_cache is None else str(cfg.timing_cache),
            "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _attach_timing_cache(config, path: Path | None) -> None:
    if path is None:
        return
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    # A cache from another GPU or TensorRT version (or a damaged file) is refused rather than mixed in
    # (ignore_mismatch=False); the build then starts from an empty cache, and the file is replaced by this machine's.
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        if not data:
            raise RuntimeError("TensorRT could not create an empty timing cache")
        logger.warning("timing cache %s does not match this GPU / TensorRT version; starting an empty one", path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    else:
        logger.info("timing cache %s (%d bytes)", path, len(data))


def build_engine(onnx_path: str | os.PathLike, out_path: str | os.PathLike, cfg: EngineConfig) -> dict:
    """Build ``out_path`` (and ``<out_path>.json``) from ``onnx_path``; returns the metadata written.

    Raises ValueError / FileNotFoundError for bad input, RuntimeError when TensorRT is missing or the build fails.
    """
    from m2s2l_edge.artifacts.metadata import sidecar_path
    from m2s2l_edge.io import atomic_write_bytes, atomic_write_text
    from m2s2l_edge.runtime.gpu_probes import gpu_info
    from m2s2l_edge.runtime.tensorrt_lib import find_plugin_library, import_tensorrt, load_plugin_library

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist")
    if not out_path.parent.is_dir():
        raise FileNotFoundError(f"output folder {out_path.parent} does not exist")
    trt = import_tensorrt()
    info = read_onnx_info(onnx_path)
    plan = plan_precision(trt.__version__, fp16=cfg.fp16, onnx_precision=info.precision)
    profile = profile_shapes(info.input_name, info.input_shape, cfg)
    plugin = find_plugin_library(cfg.plugin) if info.scan_nodes or cfg.plugin is not None else None

    trt_logger = trt.Logger(trt.Logger.VERBOSE if cfg.verbose else trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    if plugin is None:
        logger.info("%s has no %s node: building without the plugin", onnx_path, spec.OP_NAME)
    else:
        load_plugin_library(trt, plugin)  # before parsing: the parser maps SelectiveScan to the registered creator
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    # parse_from_file (not parse(bytes)) so that weights stored as external data beside the ONNX are found.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)) or "no parser error recorded"
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.int8_flag:
        config.set_flag(trt.BuilderFlag.INT8)
    if profile is not None:
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(info.input_name, *profile)
        config.add_optimization_profile(opt_profile)
    _attach_timing_cache(config, cfg.timing_cache)

    logger.info("building %s engine from %s (TensorRT %s, batch %d..%d); this takes minutes", plan.precision,
                onnx_path, trt.__version__, cfg.min_batch, cfg.max_batch)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}; its log above says why "
                           "(rerun with m2s2l-edge --verbose build ... for details)")
    atomic_write_bytes(out_path, serialized)  # IHostMemory: a buffer, written without a copy
    if cfg.timing_cache is not None:
        atomic_write_bytes(cfg.timing_cache, config.get_timing_cache().serialize())

    meta = engine_metadata(
        info.metadata, onnx_path=onnx_path, onnx_sha256=_sha256(onnx_path), input_name=info.input_name,
        profile=profile, trt_version=trt.__version__, gpu=gpu_info(), plan=plan, cfg=cfg, plugin=plugin,
        scan_nodes=info.scan_nodes,
    )
    atomic_write_text(sidecar_path(out_path), json.dumps(meta, indent=2))
    logger.info("wrote %s (%.1f MB) and %s", out_path, out_path.stat().st_size / 1e6, sidecar_path(out_path).name)
    return meta
