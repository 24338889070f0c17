"""A Triton Inference Server model repository from our exports (``m2s2l-edge serve triton-repo``).

Layout written (model names are fixed, so a client's ``--model`` is the same on every server)::

    REPO/
      m2s2l_onnx/      config.pbtxt, 1/model.onnx    backend onnxruntime (portable: CPU or GPU; plugin flavour: CPU,
                                                     its SelectiveScan nodes in our native op library)
      m2s2l_python/    config.pbtxt, 1/model.py, 1/model.onnx
                                                     backend python: our OnnxRuntimeBackend inside Triton
      m2s2l_tensorrt/  config.pbtxt, 1/model.plan    platform tensorrt_plan (with --engine)
      plugins/libm2s2l_plugins.so                    the engine's SelectiveScan plugin (with --engine)
      plugins/libm2s2l_ort_ops.so                    the ONNX Runtime SelectiveScan op (plugin-flavour ONNX), named
                                                     by absolute path in m2s2l_onnx's model_operations
      m2s2l_metadata.json                            the export's metadata (+ calibration), for people
      tritonserver.sh                                the exact server command line

Every ``config.pbtxt`` carries the same metadata as model-configuration parameters (``m2s2l.metadata``: the export
record as JSON; ``m2s2l.calibration``: a calibration file's JSON), which the Triton client backend reads back from
the server: λ, clip length, resolution and normalisation travel with the model, not with the client.

The served model is stateless: one request is one or more complete (T, 3, H, W) clips. Each camera's sliding window
of its last T frames stays on the client (``watch`` keeps it per camera), so any server instance can take any
request, dynamic batching can mix cameras freely, and a server restart loses no camera state.

A plugin-flavour ONNX is served by Triton's onnxruntime backend like any other: its config names our op library in
``model_operations { op_library_filename }``, which that backend registers with each session (as any ONNX Runtime
host does, ``m2s2l_edge.ops.ort_library``). The library is compiled for the CPU of the machine that writes the
repository (``-march=native``), and the path is absolute: write the repository on the serving machine, or rewrite
that one line after moving it. The op runs on the CPU, so that model gets a CPU instance group.

The config text is written here directly (no protobuf needed at write time); the tests parse every generated file
with the ``ModelConfig`` message that tritonclient ships, so a misspelt field or a wrong type fails there.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ONNX_MODEL = "m2s2l_onnx"
PYTHON_MODEL = "m2s2l_python"
TENSORRT_MODEL = "m2s2l_tensorrt"
METADATA_FILE = "m2s2l_metadata.json"
SERVER_SCRIPT = "tritonserver.sh"
PLUGIN_DIR = "plugins"
ORT_OP_LIBRARY = "libm2s2l_ort_ops.so"
DEFAULT_MAX_BATCH = 8
# Long enough for clips of several cameras arriving within one frame period to meet in one batch, short next to a
# CPU or GPU forward pass (milliseconds to a second), so a lone camera barely waits.
DEFAULT_QUEUE_DELAY_US = 2000

PARAM_METADATA = "m2s2l.metadata"
PARAM_CALIBRATION = "m2s2l.calibration"


@dataclass(frozen=True)
class RepoConfig:
    """What ``write_repository`` builds. ``device``: None lets Triton place the onnxruntime model (GPU when it has
    one), "cpu" or "cuda[:N]" pins it. ``max_batch``: Triton's max_batch_size for the batching models (None: the
    engine's profile maximum, else 8)."""

    max_batch: int | None = None
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    device: str | None = None
    threads: int | None = None
    python_model: bool = True

    def __post_init__(self) -> None:
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"max batch must be >= 1, got {self.max_batch}")
        if self.queue_delay_us < 0:
            raise ValueError(f"queue delay must be >= 0 µs, got {self.queue_delay_us}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.device is not None and self.device != "cpu" and self.device.partition(":")[0] != "cuda":
            raise ValueError(f"device {self.device!r}: expected cpu, cuda or cuda:N")


# --- protobuf text format ------------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    """A protobuf text-format string literal: printable ASCII kept (quote and backslash escaped), other bytes of the
    UTF-8 encoding as octal escapes, which every text-format parser reads."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif not 0x20 <= byte < 0x7F:
            out.append(f"\\{byte:03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _tensor(name: str, dims: tuple[int, ...]) -> str:
    return f'  {{ name: {_quote(name)} data_type: TYPE_FP32 dims: [ {", ".join(str(d) for d in dims)} ] }}'


def config_text(
    *,
    name: str,
    backend: str | None = None,
    platform: str | None = None,
    default_model_filename: str | None = None,
    max_batch_size: int,
    input_name: str,
    input_dims: tuple[int, ...],
    outputs: tuple[tuple[str, tuple[int, ...]], ...],
    queue_delay_us: int | None,
    instance_kind: str | None,
    gpus: tuple[int, ...] = (),
    parameters: dict[str, str] | None = None,
    op_libraries: tuple[str, ...] = (),
) -> str:
    """One model's ``config.pbtxt``. ``input_dims`` / output dims exclude the batch dimension when
    ``max_batch_size`` > 0 (Triton's convention); ``queue_delay_us`` None: no dynamic batching."""
    lines = [f"name: {_quote(name)}"]
    if backend is not None:
        lines.append(f"backend: {_quote(backend)}")
    if platform is not None:
        lines.append(f"platform: {_quote(platform)}")
    if default_model_filename is not None:
        lines.append(f"default_model_filename: {_quote(default_model_filename)}")
    lines.append(f"max_batch_size: {max_batch_size}")
    lines.append("input [\n" + _tensor(input_name, input_dims) + "\n]")
    lines.append("output [\n" + ",\n".join(_tensor(n, d) for n, d in outputs) + "\n]")
    if queue_delay_us is not None and max_batch_size > 0:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}\n}}")
    group = ["count: 1"]
    if instance_kind is not None:
        group.append(f"kind: {instance_kind}")
    if gpus:
        group.append(f"gpus: [ {', '.join(str(g) for g in gpus)} ]")
    lines.append("instance_group [\n  { " + " ".join(group) + " }\n]")
    if op_libraries:
        lines.append("model_operations {\n" + "".join(f"  op_library_filename: {_quote(lib)}\n"
                                                      for lib in op_libraries) + "}")
    for key, value in (parameters or {}).items():
        lines.append(f"parameters {{\n  key: {_quote(key)}\n  value: {{ string_value: {_quote(value)} }}\n}}")
    return "\n".join(lines) + "\n"


# --- the repository ------------------------------------------------------------------------------------------------


def _instance(device: str | None) -> tuple[str | None, tuple[int, ...]]:
    if device is None:
        return None, ()
    if device == "cpu":
        return "KIND_CPU", ()
    index = device.partition(":")[2]
    return "KIND_GPU", (int(index),) if index else ()


def _check_same_model(onnx_meta: dict, engine_meta: dict, onnx: Path, engine: Path) -> None:
    for key in ("config", "lambda", "normalization", "input_name", "output_names"):
        a, b = onnx_meta.get(key), engine_meta.get(key)
        if key == "output_names":
            a, b = list(a or ()), list(b or ())
        if a != b:
            raise ValueError(f"--engine {engine} was not built from the model of --onnx {onnx}: their {key} differ "
                             f"({b!r} vs {a!r})")


def _engine_batch(engine_meta: dict, engine: Path, wanted: int | None) -> tuple[int, int | None]:
    """(max_batch_size, fixed batch or None) for the engine, from its optimisation profile."""
    profile = (engine_meta.get("engine") or {}).get("profile")
    if profile is None:
        fixed = engine_meta.get("batch")
        if not isinstance(fixed, int):
            raise ValueError(f"--engine {engine}: its metadata records neither a profile nor a fixed batch")
        return 0, fixed
    low, high = int(profile["min"][0]), int(profile["max"][0])
    if low > 1:
        raise ValueError(f"--engine {engine}: its profile starts at batch {low}; Triton sends batches from 1 up, so "
                         "rebuild it with --min-batch 1")
    if wanted is not None and wanted > high:
        raise ValueError(f"--batch {wanted} exceeds the engine's largest batch {high} (rebuild with --max-batch "
                         f"{wanted}, or choose --batch <= {high})")
    return (wanted or high), None


def server_command(repo: Path, *, plugin: Path | None, grpc_port: int = 8001, http_port: int = 8000) -> list[str]:
    """The ``tritonserver`` command line that serves ``repo`` (plugin library through the TensorRT backend's
    ``plugins`` setting)."""
    cmd = ["tritonserver", f"--model-repository={repo}", f"--http-port={http_port}", f"--grpc-port={grpc_port}"]
    if plugin is not None:
        cmd.append(f"--backend-config=tensorrt,plugins={plugin}")
    return cmd


def _server_script(has_plugin: bool) -> str:
    plugin_arg = ' --backend-config=tensorrt,plugins="$REPO/plugins/libm2s2l_plugins.so"' if has_plugin else ""
    return f"""#!/bin/sh
# Start NVIDIA Triton Inference Server on this model repository (written by m2s2l-edge serve triton-repo).
# Extra arguments are passed on, e.g. --model-control-mode=explicit --load-model={PYTHON_MODEL}.
# The plugin library can also be preloaded instead: LD_PRELOAD="$REPO/plugins/libm2s2l_plugins.so" tritonserver ...
REPO="$(cd "$(dirname "$0")" && pwd)"
exec tritonserver --model-repository="$REPO" --http-port=8000 --grpc-port=8001{plugin_arg} "$@"
"""


def _replace_dir(staging: Path, out: Path, overwrite: bool) -> None:
    """Move the finished ``staging`` folder to ``out`` (an existing ``out`` only with ``overwrite``), so a failed
    run never leaves a half-written repository and never destroys the old one before the new one is complete."""
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
        return
    staging.rename(out)


def _check_calibration_fits(cal, path, record: dict, onnx: Path, engine) -> None:
    """ValueError unless calibration ``cal`` was made for the served model: its weights (one calibration serves every
    format of one model; an export that records no weights digest is matched by the ONNX's or the engine's file),
    resolution, T, score and λ — the rule ``watch --calibration`` follows."""
    from m2s2l_edge.scoring.model import model_scoring
    from m2s2l_edge.watch.calibration import check_matches, identity_of

    size = record["image_size"]
    geometry = (int(record["clip_len"]), (size, size) if isinstance(size, int) else tuple(size))
    scoring = model_scoring(record, geometry, score=cal.score)
    errors = []
    for model_file in (onnx, engine):
        if model_file is None:
            continue
        try:
            check_matches(cal, identity_of(scoring, model_file), f"--calibration {path}")
            return
        except ValueError as e:
            errors.append(e)
    raise errors[0]


@dataclass
class _Model:
    """One model of the repository: its ``config_text`` arguments (all but name, input name and the shared
    parameters) and the files of its version folder (name in the folder → source)."""

    settings: dict
    files: dict[str, Path]
    parameters: dict[str, str] | None = None


def _batching(meta, fixed: int | None, max_batch: int, queue_delay_us: int) -> dict:
    """Batch settings of a model: dynamic batching up to ``max_batch`` clips, or none for a model of ``fixed`` batch
    (Triton's ``max_batch_size: 0``, the batch inside the dims)."""
    cfg = meta.config
    clip_dims = (cfg["clip_len"], cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    frame_dims = (cfg["in_channels"], cfg["image_size"], cfg["image_size"])
    out_names = tuple(meta.output_names)
    if fixed is None:
        return dict(max_batch_size=max_batch, input_dims=clip_dims, outputs=tuple((o, frame_dims) for o in out_names),
                    queue_delay_us=queue_delay_us)
    return dict(max_batch_size=0, input_dims=(fixed, *clip_dims),
                outputs=tuple((o, (fixed, *frame_dims)) for o in out_names), queue_delay_us=None)


def _check_destination(out: Path, onnx: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder")
    if not onnx.is_file():
        raise FileNotFoundError(f"--onnx {onnx} does not exist")


def _served_calibration(calibration, record: dict, onnx: Path, engine) -> dict | None:
    """The calibration file's record, once it is known to be one made for the served model; None without one."""
    if calibration is None:
        return None
    from m2s2l_edge.watch import calibration as calibration_file

    loaded = calibration_file.load(calibration)  # validated: a file that is no calibration is refused
    _check_calibration_fits(loaded, calibration, record, onnx, engine)
    return loaded.to_dict()


def _engine_and_plugin(engine, plugin, record: dict, onnx: Path) -> tuple[dict | None, Path | None]:
    """The engine's metadata (checked to be the ONNX's model) and the plugin library it needs (None when it needs
    none); (None, None) without an engine, where ``plugin`` is refused."""
    if engine is None:
        if plugin is not None:
            raise ValueError("--plugin goes with --engine")
        return None, None
    from m2s2l_edge.artifacts.metadata import read_engine_metadata
    from m2s2l_edge.runtime.tensorrt_lib import find_plugin_library

    engine = Path(engine)
    if not engine.is_file():
        raise FileNotFoundError(f"--engine {engine} does not exist")
    engine_meta = read_engine_metadata(engine)
    _check_same_model(record, engine_meta, onnx, engine)
    section = engine_meta.get("engine") or {}
    if section.get("plugin_required", engine_meta.get("scan") == "plugin"):
        try:
            return engine_meta, find_plugin_library(plugin, recorded=section.get("plugin"))
        except RuntimeError as e:
            raise RuntimeError(f"--engine {engine} needs the SelectiveScan plugin library: {e}") from None
    if plugin is not None:
        raise ValueError(f"--plugin: --engine {engine} has no SelectiveScan plugin layers to load it for")
    return engine_meta, None


def _model_parameters(meta, record: dict, calib: dict | None) -> dict[str, str]:
    """The parameters every model carries: the export record (and the calibration) for the client to read back."""
    params = {
        PARAM_METADATA: json.dumps(record, sort_keys=True),
        "m2s2l.lambda": repr(meta.lam),
        "m2s2l.clip_len": str(meta.clip_len),
        "m2s2l.image_size": str(meta.image_size),
    }
    if calib is not None:
        params[PARAM_CALIBRATION] = json.dumps(calib, sort_keys=True)
    return params


def _onnx_model(meta, onnx: Path, out: Path, config: RepoConfig) -> tuple[_Model, Path | None]:
    """The onnxruntime model and, for a plugin-flavour ONNX, our op library it needs (pinned to a CPU instance)."""
    fixed = meta.batch if isinstance(meta.batch, int) else None
    if fixed is not None:
        logger.warning("%s has a fixed batch of %d: the onnxruntime model cannot batch dynamically (export with "
                       "--dynamic); the python model still does", onnx, fixed)
    op_lib = None
    if meta.scan == "portable":
        kind, gpus = _instance(config.device)
        op_libraries: tuple[str, ...] = ()
    else:
        from m2s2l_edge.ops import ort_library

        if config.device not in (None, "cpu"):
            raise ValueError(f"device {config.device!r}: a plugin-flavour ONNX runs its SelectiveScan nodes in our CPU "
                             "op; serve it on the cpu, or serve the TensorRT engine (--engine) on a GPU")
        op_lib = ort_library.library()  # raises RuntimeError naming why it is unavailable and the fix
        kind, gpus = "KIND_CPU", ()
        op_libraries = (str(out.resolve() / PLUGIN_DIR / ORT_OP_LIBRARY),)
    settings = dict(backend="onnxruntime", default_model_filename="model.onnx", instance_kind=kind, gpus=gpus,
                    op_libraries=op_libraries,
                    **_batching(meta, fixed, config.max_batch or DEFAULT_MAX_BATCH, config.queue_delay_us))
    return _Model(settings, {"model.onnx": onnx}), op_lib


def _python_model(meta, onnx: Path, config: RepoConfig, params: dict[str, str]) -> _Model:
    """Our ONNX Runtime runner inside Triton's Python backend: batches whatever the ONNX's batch."""
    py_params = dict(params)
    if config.threads is not None:
        py_params["m2s2l.threads"] = str(config.threads)
    settings = dict(backend="python", instance_kind="KIND_CPU", gpus=(),
                    **_batching(meta, None, config.max_batch or DEFAULT_MAX_BATCH, config.queue_delay_us))
    return _Model(settings, {"model.onnx": onnx, "model.py": Path(__file__).with_name("triton_python_model.py")},
                  parameters=py_params)


def _tensorrt_model(meta, engine: Path, engine_meta: dict, config: RepoConfig) -> _Model:
    """The engine as a tensorrt_plan model on a GPU, batched within its optimisation profile."""
    n, fixed = _engine_batch(engine_meta, engine, config.max_batch)
    kind, gpus = _instance(config.device if config.device and config.device != "cpu" else "cuda")
    settings = dict(platform="tensorrt_plan", default_model_filename="model.plan", instance_kind=kind, gpus=gpus,
                    **_batching(meta, fixed, n, config.queue_delay_us))
    return _Model(settings, {"model.plan": engine})


def _write_model(staging: Path, name: str, model: _Model, input_name: str, params: dict[str, str]) -> None:
    version = staging / name / "1"
    version.mkdir(parents=True)
    for target, source in model.files.items():
        shutil.copyfile(source, version / target)
    text = config_text(name=name, input_name=input_name, parameters=model.parameters or params, **model.settings)
    (staging / name / "config.pbtxt").write_text(text, encoding="utf-8")


def _write_libraries(staging: Path, plugin_lib: Path | None, op_lib: Path | None) -> None:
    if plugin_lib is None and op_lib is None:
        return
    (staging / PLUGIN_DIR).mkdir()
    if plugin_lib is not None:
        shutil.copyfile(plugin_lib, staging / PLUGIN_DIR / plugin_lib.name)
    if op_lib is not None:
        shutil.copyfile(op_lib, staging / PLUGIN_DIR / ORT_OP_LIBRARY)


def _write_server_files(staging: Path, summary_meta: dict, has_plugin: bool) -> None:
    """The metadata for people and the server's command line as a script."""
    (staging / METADATA_FILE).write_text(json.dumps(summary_meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    script = staging / SERVER_SCRIPT
    script.write_text(_server_script(has_plugin), encoding="utf-8")
    script.chmod(0o755)


def write_repository(
    out: str | os.PathLike,
    onnx: str | os.PathLike,
    *,
    engine: str | os.PathLike | None = None,
    plugin: str | os.PathLike | None = None,
    calibration: str | os.PathLike | None = None,
    config: RepoConfig | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the model repository ``out`` from ``onnx`` (and ``engine``); returns a summary: the models written, the
    server command line, the metadata.

    Every input is checked and every model planned before anything is written; the repository is written into a
    staging folder beside ``out`` and moved into place complete.

    Raises FileExistsError for an existing ``out`` without ``overwrite``, FileNotFoundError for missing inputs,
    ValueError for inputs that are not ours or do not belong together, RuntimeError when an engine's plugin library
    cannot be found.
    """
    from m2s2l_edge.artifacts.metadata import read_metadata

    config = config or RepoConfig()
    out, onnx = Path(out), Path(onnx)
    _check_destination(out, onnx, overwrite)
    meta = read_metadata(onnx)
    record = meta.to_dict()
    calib = _served_calibration(calibration, record, onnx, engine)
    engine_meta, plugin_lib = _engine_and_plugin(engine, plugin, record, onnx)
    params = _model_parameters(meta, record, calib)

    models: dict[str, _Model] = {}
    models[ONNX_MODEL], op_lib = _onnx_model(meta, onnx, out, config)
    if config.python_model:
        models[PYTHON_MODEL] = _python_model(meta, onnx, config, params)
    if engine is not None:
        models[TENSORRT_MODEL] = _tensorrt_model(meta, Path(engine), engine_meta, config)
    summary_meta = {**record, "calibration": calib}
    if engine_meta is not None:
        summary_meta["engine"] = engine_meta.get("engine")

    out_parent = out.resolve().parent
    out_parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out_parent))
    try:
        for name, model in models.items():
            _write_model(staging, name, model, meta.input_name, params)
        _write_libraries(staging, plugin_lib, op_lib)
        _write_server_files(staging, summary_meta, has_plugin=plugin_lib is not None)
        _replace_dir(staging, out, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    plugin_in_repo = out.resolve() / PLUGIN_DIR / plugin_lib.name if plugin_lib is not None else None
    command = server_command(out.resolve(), plugin=plugin_in_repo)
    logger.info("wrote Triton model repository %s: %s", out, ", ".join(models))
    return {"repository": str(out), "models": list(models), "command": command, "metadata": summary_meta}
