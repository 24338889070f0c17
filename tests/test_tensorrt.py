"""TensorRT engine build, runtime backend and benchmark.

Without TensorRT (CI, this workplace) the pure parts run: configuration checks, the TensorRT 10 / 11 precision plan,
the optimisation profile, metadata assembly, plugin lookup, Jetson probes, the summary, the CLI's one-line errors and
the plugin-flavour ONNX against the plugin creator's field list. Every test that needs TensorRT skips with a reason.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from m2s2l_edge.artifacts import metadata as meta_mod
from m2s2l_edge.cli.app import app
from m2s2l_edge.export.engine import (
    EngineConfig,
    PrecisionPlan,
    build_engine,
    engine_metadata,
    plan_precision,
    profile_shapes,
    read_onnx_info,
)
from m2s2l_edge.ops import spec
from m2s2l_edge.runtime import gpu_probes
from m2s2l_edge.runtime import tensorrt_backend as trtb
from m2s2l_edge.runtime import tensorrt_lib as trtlib
from m2s2l_edge.runtime.bench import BenchConfig, bench_engine

REPO = Path(__file__).resolve().parents[1]
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
NO_TRT_REASON = "TensorRT is not installed (pip install tensorrt, or JetPack's python3-libnvinfer)"


def _one_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


# --------------------------------------------------------------------------------------------------------------------
# EngineConfig, precision plan, profile


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(min_batch=0), "min batch must be >= 1"),
        (dict(min_batch=2, opt_batch=1, max_batch=4), "min <= opt <= max"),
        (dict(min_batch=1, opt_batch=8, max_batch=4), "min <= opt <= max"),
        (dict(workspace_mib=0), "workspace must be > 0"),
        (dict(workspace_mib=-5), "workspace must be > 0"),
    ],
)
def test_engine_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**kwargs)


def test_engine_config_accepts_a_range_and_serialises():
    cfg = EngineConfig(min_batch=1, opt_batch=2, max_batch=8, timing_cache=Path("t.cache"))
    assert json.loads(json.dumps(cfg.as_dict()))["timing_cache"] == "t.cache"


@pytest.mark.parametrize(
    "version, fp16, onnx_precision, plan",
    [
        # TensorRT 10 (JetPack 6 / 7): FP32 ONNX + FP16 builder flag, weakly typed.
        ("10.3.0.30", True, "fp32", PrecisionPlan(strongly_typed=False, fp16_flag=True, precision="fp16")),
        ("10.13.3.9", False, "fp32", PrecisionPlan(strongly_typed=False, fp16_flag=False, precision="fp32")),
        # An FP16 export is built strongly typed on every version (its FP32 parts stay FP32).
        ("10.3.0", True, "fp16", PrecisionPlan(strongly_typed=True, fp16_flag=False, precision="fp16")),
        ("11.1.0.5", True, "fp16", PrecisionPlan(strongly_typed=True, fp16_flag=False, precision="fp16")),
        # TensorRT 11: always strongly typed, no FP16 flag.
        ("11.0", False, "fp32", PrecisionPlan(strongly_typed=True, fp16_flag=False, precision="fp32")),
        # An INT8 (Q/DQ) export: TensorRT 10 with the INT8 flag (and FP16 for the float layers), 11 strongly typed.
        ("10.3.0", True, "int8", PrecisionPlan(strongly_typed=False, fp16_flag=True, precision="int8+fp16",
                                               int8_flag=True)),
        ("10.13.3", False, "int8", PrecisionPlan(strongly_typed=False, fp16_flag=False, precision="int8",
                                                 int8_flag=True)),
        ("11.1.0", False, "int8", PrecisionPlan(strongly_typed=True, fp16_flag=False, precision="int8")),
    ],
)
def test_precision_plan_per_tensorrt_version(version, fp16, onnx_precision, plan):
    assert plan_precision(version, fp16=fp16, onnx_precision=onnx_precision) == plan


def test_precision_plan_errors():
    with pytest.raises(ValueError, match="no FP16 builder flag"):
        plan_precision("11.1.0", fp16=True, onnx_precision="fp32")
    with pytest.raises(ValueError, match="drop --fp32"):
        plan_precision("10.3.0", fp16=False, onnx_precision="fp16")
    with pytest.raises(RuntimeError, match="TensorRT >= 10.0"):
        plan_precision("8.6.1.6", fp16=True, onnx_precision="fp32")
    with pytest.raises(ValueError, match="cannot read a TensorRT version"):
        plan_precision("ten", fp16=True, onnx_precision="fp32")
    with pytest.raises(ValueError, match="expected fp32, fp16 or int8"):
        plan_precision("10.3.0", fp16=True, onnx_precision="int4")
    with pytest.raises(ValueError, match="build the INT8 ONNX with --fp32"):
        plan_precision("11.1.0", fp16=True, onnx_precision="int8")


def test_parse_trt_version():
    assert trtlib.parse_trt_version("10.3.0.30") == (10, 3)
    assert trtlib.parse_trt_version("11.1") == (11, 1)


def test_profile_shapes():
    clip = (-1, 4, 3, 64, 64)
    cfg = EngineConfig(min_batch=1, opt_batch=2, max_batch=8)
    assert profile_shapes("clip", clip, cfg) == ((1, 4, 3, 64, 64), (2, 4, 3, 64, 64), (8, 4, 3, 64, 64))
    assert profile_shapes("clip", (1, 4, 3, 64, 64), EngineConfig()) is None  # static batch 1, default range
    with pytest.raises(ValueError, match="fixed batch of 1"):
        profile_shapes("clip", (1, 4, 3, 64, 64), cfg)
    with pytest.raises(ValueError, match="only the batch dimension may be dynamic"):
        profile_shapes("clip", (-1, 4, 3, -1, 64), cfg)


# --------------------------------------------------------------------------------------------------------------------
# ONNX reading and metadata


def _tiny_onnx(path: Path, *, precision: str = "fp32", batch="batch", with_scan: bool = True,
               metadata: bool = True) -> Path:
    """A hand-made ONNX with the exporter's outward shape: one clip input, two outputs, optional SelectiveScan node,
    the exporter's metadata record."""
    import onnx
    import onnx.helper as oh

    from m2s2l_edge.config import get_preset

    clip = oh.make_tensor_value_info("clip", onnx.TensorProto.FLOAT, [batch, 4, 3, 32, 32])
    outs = [oh.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [batch, 3, 32, 32])
            for n in ("frame_pred", "motion_pred")]
    nodes = [oh.make_node("Identity", ["x"], ["frame_pred"]), oh.make_node("Identity", ["x"], ["motion_pred"]),
             oh.make_node("ReduceMean", ["clip"], ["x"], axes=[1], keepdims=0)]
    if with_scan:
        nodes.append(oh.make_node(spec.OP_NAME, list(spec.INPUT_NAMES[:7]), ["y"], domain=spec.ONNX_DOMAIN,
                                  delta_softplus=1, plugin_version=spec.PLUGIN_VERSION,
                                  plugin_namespace=spec.PLUGIN_NAMESPACE))
    graph = oh.make_graph(nodes, "tiny", [clip], outs)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid(spec.ONNX_DOMAIN, 1)])
    if metadata:
        meta_mod.attach(model, meta_mod.ExportMetadata(
            config=get_preset("tiny").to_dict(), scan="plugin" if with_scan else "portable", precision=precision,
            batch="dynamic" if isinstance(batch, str) else batch, lam=0.6, lambda_source="explicit"))
    onnx.save(model, str(path))
    return path


def test_read_onnx_info(tmp_path):
    pytest.importorskip("onnx", reason="reading ONNX needs the onnx package")
    info = read_onnx_info(_tiny_onnx(tmp_path / "m.onnx"))
    assert (info.input_name, info.input_shape, info.precision, info.scan_nodes) == ("clip", (-1, 4, 3, 32, 32),
                                                                                     "fp32", 1)
    assert info.metadata["lambda"] == 0.6 and info.metadata["preset"] == "tiny" and info.metadata["scan"] == "plugin"

    half = read_onnx_info(_tiny_onnx(tmp_path / "h.onnx", precision="fp16", batch=2, with_scan=False))
    assert (half.input_shape, half.precision, half.scan_nodes) == ((2, 4, 3, 32, 32), "fp16", 0)

    with pytest.raises(ValueError, match="no m2s2l-edge metadata"):
        read_onnx_info(_tiny_onnx(tmp_path / "bare.onnx", metadata=False))
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        read_onnx_info(tmp_path / "bad.onnx")


def test_engine_metadata_assembly():
    cfg = EngineConfig(min_batch=1, opt_batch=1, max_batch=4, workspace_mib=512)
    plan = plan_precision("10.3.0.30", fp16=True, onnx_precision="fp32")
    model_meta = {"preset": "tiny", "lambda": 0.6, "model_config": {"image_size": 32}}
    meta = engine_metadata(
        model_meta, onnx_path=Path("m.onnx"), onnx_sha256="ab" * 32, input_name="clip",
        profile=profile_shapes("clip", (-1, 4, 3, 32, 32), cfg), trt_version="10.3.0.30",
        gpu={"gpu": "Orin", "compute_capability": "8.7"}, plan=plan, cfg=cfg, plugin=Path("plugins/build/x.so"),
        scan_nodes=12,
    )
    again = json.loads(json.dumps(meta))  # JSON-ready: no Paths, tuples become lists
    assert {k: again[k] for k in model_meta} == model_meta
    eng = again["engine"]
    assert eng["tensorrt"] == "10.3.0.30" and eng["gpu"] == "Orin" and eng["compute_capability"] == "8.7"
    assert eng["precision"] == "fp16" and eng["builder_flags"] == ["FP16"] and eng["strongly_typed"] is False
    assert eng["profile"] == {"min": [1, 4, 3, 32, 32], "opt": [1, 4, 3, 32, 32], "max": [4, 4, 3, 32, 32]}
    assert eng["plugin"].endswith("plugins/build/x.so") and Path(eng["plugin"]).is_absolute()
    assert eng["plugin_required"] is True and eng["scan_nodes"] == 12 and eng["workspace_mib"] == 512
    no_plugin = engine_metadata({}, onnx_path="m.onnx", onnx_sha256="", input_name="clip", profile=None,
                                trt_version="11.1.0", gpu={}, plan=plan, cfg=cfg, plugin=None, scan_nodes=0)
    assert no_plugin["engine"]["plugin"] is None and no_plugin["engine"]["plugin_required"] is False
    assert meta_mod.sidecar_path("out/model.engine") == Path("out/model.engine.json")


def test_read_engine_metadata(tmp_path):
    pytest.importorskip("onnx", reason="reading ONNX needs the onnx package")
    info = read_onnx_info(_tiny_onnx(tmp_path / "m.onnx"))
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"copy the ONNX's <model>.onnx.json"):
        meta_mod.read_engine_metadata(engine)
    # What `build` writes: the export's record plus the engine section; read back validated.
    record = {**info.metadata, "engine": {"tensorrt": "10.3.0.30", "plugin_required": True}}
    meta_mod.sidecar_path(engine).write_text(json.dumps(record))
    meta = meta_mod.read_engine_metadata(engine)
    assert meta["lambda"] == 0.6 and meta["preset"] == "tiny" and meta["engine"]["tensorrt"] == "10.3.0.30"
    # An engine built by trtexec, with the ONNX's sidecar copied beside it: no engine section.
    meta_mod.sidecar_path(engine).write_text(json.dumps(info.metadata))
    assert meta_mod.read_engine_metadata(engine)["engine"] == {}
    meta_mod.sidecar_path(engine).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="unsupported export metadata format"):
        meta_mod.read_engine_metadata(engine)


# --------------------------------------------------------------------------------------------------------------------
# Plugin library lookup


def test_find_plugin_library_order(tmp_path):
    lib_dir = tmp_path / "plugins" / "build"
    lib_dir.mkdir(parents=True)
    found = lib_dir / trtlib.PLUGIN_LIB_NAME
    found.write_bytes(b"")
    explicit = tmp_path / "mine.so"
    explicit.write_bytes(b"")
    from_env = tmp_path / "env.so"
    from_env.write_bytes(b"")
    dirs = [tmp_path / "empty", lib_dir]
    assert trtlib.find_plugin_library(explicit, env={trtlib.PLUGIN_ENV: str(from_env)}, search_dirs=dirs) == explicit
    assert trtlib.find_plugin_library(env={trtlib.PLUGIN_ENV: str(from_env)}, search_dirs=dirs) == from_env
    assert trtlib.find_plugin_library(env={}, recorded=explicit, search_dirs=dirs) == explicit
    assert trtlib.find_plugin_library(env={}, recorded=tmp_path / "gone.so", search_dirs=dirs) == found
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trtlib.find_plugin_library(tmp_path / "missing.so", env={}, search_dirs=dirs)
    with pytest.raises(FileNotFoundError, match=trtlib.PLUGIN_ENV):
        trtlib.find_plugin_library(env={trtlib.PLUGIN_ENV: str(tmp_path / "missing.so")}, search_dirs=dirs)
    with pytest.raises(RuntimeError, match="m2s2l-edge plugin build"):
        trtlib.find_plugin_library(env={}, search_dirs=[tmp_path / "empty"])


def test_plugin_search_dirs_start_with_plugins_build(tmp_path):
    dirs = trtlib.plugin_search_dirs(cwd=tmp_path)
    assert dirs[0] == tmp_path / "plugins" / "build" and REPO / "plugins" / "build" in dirs


# --------------------------------------------------------------------------------------------------------------------
# Jetson probes and the summary

NVPMODEL_Q = "NV Power Mode: MAXN\n0\n"
CLOCKS_ON = (
    "SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit\n"
    "cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0 c7=0\n"
    "GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\n"
    "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1\n"
    "NV Power Mode: MAXN\n"
)
CLOCKS_OFF = CLOCKS_ON.replace("GPU MinFreq=1300500000", "GPU MinFreq=306000000")


def test_jetson_parsers():
    assert gpu_probes.parse_nvpmodel(NVPMODEL_Q) == "MAXN (0)"
    assert gpu_probes.parse_nvpmodel("NV Power Mode: 15W\n") == "15W"
    assert gpu_probes.parse_nvpmodel("nvpmodel: permission denied") is None
    assert gpu_probes.parse_jetson_clocks(CLOCKS_ON) == "on"
    assert gpu_probes.parse_jetson_clocks(CLOCKS_OFF) == "off"
    assert gpu_probes.parse_jetson_clocks("Error: run as root") == "unknown"


def test_jetson_info(tmp_path, monkeypatch):
    assert gpu_probes.jetson_info(release_file=tmp_path / "none") is None
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    monkeypatch.setattr(gpu_probes.shutil, "which", lambda name: f"/usr/bin/{name}")

    def fake_run(argv, **kwargs):
        if argv[0] == "nvpmodel":
            return subprocess.CompletedProcess(argv, 0, NVPMODEL_Q, "")
        # jetson_clocks --show needs root: refused without sudo, refused by `sudo -n` (no password prompt).
        return subprocess.CompletedProcess(argv, 1, "", "Error: must be root")

    info = gpu_probes.jetson_info(release_file=release, run=fake_run)
    assert info == {"l4t_release": "R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64",
                    "power_mode": "MAXN (0)", "jetson_clocks": "unknown"}


# --------------------------------------------------------------------------------------------------------------------
# CLI: one readable line without TensorRT


@pytest.mark.skipif(HAVE_TRT, reason="checks the message shown where TensorRT is missing")
def test_build_without_tensorrt_is_one_line(tmp_path):
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"")  # never read: the TensorRT import fails first
    r = CliRunner().invoke(app, ["build", "--onnx", str(onnx_path)])
    assert r.exit_code == 3
    line = _one_line(r.output)
    assert line.startswith("error: TensorRT Python package not found") and "pip install tensorrt" in line
    assert not (tmp_path / "m.engine").exists()


def test_build_bad_input_is_one_line(tmp_path):
    r = CliRunner().invoke(app, ["build", "--onnx", str(tmp_path / "missing.onnx")])
    assert r.exit_code == 1 and _one_line(r.output) == f"error: --onnx {tmp_path / 'missing.onnx'} does not exist"
    r = CliRunner().invoke(app, ["build", "--onnx", str(tmp_path / "m.onnx"), "--min-batch", "4", "--max-batch", "2"])
    assert r.exit_code == 1 and "min <= opt <= max" in _one_line(r.output)
    r = CliRunner().invoke(app, ["build", "--onnx", str(tmp_path / "m.onnx"), "--workspace", "0"])
    assert r.exit_code == 1 and "workspace must be > 0" in _one_line(r.output)


def test_build_engine_checks_files_before_tensorrt(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_engine(tmp_path / "missing.onnx", tmp_path / "m.engine", EngineConfig())
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="output folder"):
        build_engine(tmp_path / "m.onnx", tmp_path / "no" / "m.engine", EngineConfig())


def test_bench_engine_bad_input_is_one_line(tmp_path):
    missing = tmp_path / "nope.engine"
    r = CliRunner().invoke(app, ["bench", "--engine", str(missing)])
    assert r.exit_code == 1 and _one_line(r.output) == f"error: --engine {missing} does not exist"
    r = CliRunner().invoke(app, ["bench", "--engine", str(missing), "--onnx", "m.onnx"])
    assert r.exit_code == 1 and _one_line(r.output) == "error: give one model: --onnx and --engine were both given"
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"")
    r = CliRunner().invoke(app, ["bench", "--engine", str(engine)])
    assert r.exit_code == 1 and "has no metadata file" in _one_line(r.output)
    (tmp_path / "m.onnx").write_bytes(b"")
    r = CliRunner().invoke(app, ["bench", "--onnx", str(tmp_path / "m.onnx"), "--plugin", "x.so"])
    assert r.exit_code == 1 and _one_line(r.output) == "error: --plugin goes with --engine"


@pytest.mark.skipif(HAVE_TRT, reason="checks the message shown where TensorRT is missing")
def test_export_format_engine_without_tensorrt_fails_before_exporting(tmp_path):
    out = tmp_path / "tiny.engine"
    r = CliRunner().invoke(app, ["export", "--preset", "tiny", "--format", "engine", "--out", str(out)])
    assert r.exit_code == 3 and _one_line(r.output).startswith("error: TensorRT Python package not found")
    assert not list(tmp_path.iterdir())  # nothing exported: TensorRT is looked for first
    r = CliRunner().invoke(app, ["export", "--preset", "tiny", "--plugin", "x.so"])
    assert r.exit_code == 1 and _one_line(r.output) == "error: --plugin goes with --format engine"


def test_backend_missing_engine_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trtb.TensorRTBackend(tmp_path / "nope.engine")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bench_engine(tmp_path / "nope.engine")


# --------------------------------------------------------------------------------------------------------------------
# plugin build


def test_cmake_commands():
    src, out = Path("plugins"), Path("plugins/build")
    configure, build = _cmake_commands(src, out, tensorrt_root=Path("/opt/trt"), cuda_arch="87", jobs=2)
    assert configure == ["cmake", "-S", "plugins", "-B", "plugins/build", "-DCMAKE_CUDA_ARCHITECTURES=87",
                         "-DM2S2L_BUILD_PLUGIN=ON", "-DM2S2L_BUILD_STATIC_PLUGIN_LIB=ON", "-DTensorRT_ROOT=/opt/trt"]
    assert build == ["cmake", "--build", "plugins/build", "-j", "2"]
    configure, _ = _cmake_commands(src, out, nvcc=Path("/usr/local/cuda/bin/nvcc"), kernels_only=True,
                                   tensorrt_root=Path("/opt/trt"))
    assert "-DM2S2L_BUILD_PLUGIN=OFF" in configure and not any("TensorRT_ROOT" in a for a in configure)
    assert "-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc" in configure
    configure, _ = _cmake_commands(src, out, static_lib=False)
    assert configure[-1] == "-DM2S2L_BUILD_STATIC_PLUGIN_LIB=OFF"


def _cmake_commands(*args, **kwargs):
    from m2s2l_edge.runtime.plugin_build import cmake_commands

    return cmake_commands(*args, **kwargs)


def test_plugin_build_without_cmake_or_nvcc_is_one_line(monkeypatch):
    from m2s2l_edge.cli import plugin_cmd
    from m2s2l_edge.runtime import plugin_build

    monkeypatch.setattr(plugin_cmd.shutil, "which", lambda name: None)
    r = CliRunner().invoke(app, ["plugin", "build", "--kernels-only"])
    assert r.exit_code == 3 and _one_line(r.output).startswith("error: cmake not found on PATH")

    monkeypatch.setattr(plugin_cmd.shutil, "which", lambda name: "/usr/bin/cmake" if name == "cmake" else None)
    monkeypatch.setattr(plugin_build, "_NVCC_FALLBACK", Path("/nonexistent/nvcc"))
    monkeypatch.delenv("CUDACXX", raising=False)
    r = CliRunner().invoke(app, ["plugin", "build", "--kernels-only"])
    assert r.exit_code == 3 and _one_line(r.output).startswith("error: nvcc (CUDA toolkit) not found")


# --------------------------------------------------------------------------------------------------------------------
# The plugin-flavour ONNX against the plugin creator's field list (scanSpec.h)


def _cpp_spec() -> dict:
    text = (REPO / "plugins" / "selective_scan" / "scanSpec.h").read_text()

    def string(name: str) -> str:
        return re.search(rf'{name}\s*=\s*"([^"]*)"', text).group(1)

    fields = re.search(r"kSCAN_PLUGIN_FIELDS\[\]\s*=\s*\{([^}]*)\}", text).group(1)
    return {
        "name": string("kSCAN_OP_NAME"),
        "version": string("kSCAN_PLUGIN_VERSION"),
        "namespace": string("kSCAN_PLUGIN_NAMESPACE"),
        "domain": string("kSCAN_ONNX_DOMAIN"),
        "fields": re.findall(r'"([^"]+)"', fields),
        "inputs": (int(re.search(r"kSCAN_NUM_INPUTS_NO_Z\s*=\s*(\d+)", text).group(1)),
                   int(re.search(r"kSCAN_NUM_INPUTS_WITH_Z\s*=\s*(\d+)", text).group(1))),
    }


@pytest.fixture(scope="module")
def plugin_onnx(tmp_path_factory) -> Path:
    """The tiny preset's plugin-flavour export (seed 0, dynamic batch, FP32), made once and shared with
    tests/test_export.py."""
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime", "onnxruntime_extensions")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the export needs {', '.join(missing)} (pip install 'm2s2l-edge[onnx]')")
    from test_export import tiny_exports

    return tiny_exports(tmp_path_factory, "fp32")["plugin"]


@pytest.mark.slow
def test_plugin_onnx_nodes_match_the_plugin_creator(plugin_onnx):
    pytest.importorskip("onnx", reason="reading ONNX needs the onnx package")
    import onnx
    from onnx.helper import get_attribute_value

    cpp = _cpp_spec()
    assert cpp["fields"] == list(spec.PLUGIN_FIELDS)  # the parser passes only these attributes to the plugin
    model = onnx.load(str(plugin_onnx))
    nodes = [n for n in model.graph.node if n.op_type == cpp["name"]]
    assert nodes, "the plugin flavour must contain SelectiveScan nodes"
    assert any(o.domain == cpp["domain"] for o in model.opset_import)
    ints, strings = onnx.AttributeProto.INT, onnx.AttributeProto.STRING
    for node in nodes:
        attrs = {a.name: a for a in node.attribute}
        # Every creator field is on the node, plus the two attributes the parser uses to find the creator; anything
        # else would be dropped silently by the parser.
        assert set(attrs) == set(cpp["fields"]) | {"plugin_version", "plugin_namespace"}, node.name
        assert node.domain == cpp["domain"], node.name
        assert attrs["delta_softplus"].type == ints and get_attribute_value(attrs["delta_softplus"]) in (0, 1)
        for key, want in (("plugin_version", cpp["version"]), ("plugin_namespace", cpp["namespace"])):
            assert attrs[key].type == strings and get_attribute_value(attrs[key]).decode() == want
        assert len(node.input) in cpp["inputs"] and all(node.input), node.name
        assert len(node.output) == 1, node.name


# --------------------------------------------------------------------------------------------------------------------
# With TensorRT and a GPU (skipped here)


def _trt_ready() -> Path:
    pytest.importorskip("tensorrt", reason=NO_TRT_REASON)
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT tests need a CUDA GPU")
    try:
        return trtlib.find_plugin_library()
    except RuntimeError as e:
        pytest.skip(str(e))


@pytest.mark.tensorrt
def test_load_plugin_registers_the_creator():
    plugin = _trt_ready()
    trt = trtlib.import_tensorrt()
    trtlib.load_plugin_library(trt, plugin)
    trtlib.load_plugin_library(trt, plugin)  # a second load is skipped, not "already registered"
    creator = trt.get_plugin_registry().get_creator(spec.OP_NAME, spec.PLUGIN_VERSION, spec.PLUGIN_NAMESPACE)
    assert creator is not None
    assert [f.name for f in creator.field_names] == list(spec.PLUGIN_FIELDS)


@pytest.mark.tensorrt
def test_build_run_and_bench_tiny_engine(tmp_path, plugin_onnx):
    """FP32 engine of the tiny preset against the PyTorch model with the same weights; then the benchmark."""
    plugin = _trt_ready()
    import torch

    from m2s2l_edge.models import create_model

    engine = tmp_path / "tiny.engine"
    cfg = EngineConfig(fp16=False, min_batch=1, opt_batch=2, max_batch=2, plugin=plugin,
                       timing_cache=tmp_path / "tiny.cache")
    meta = build_engine(plugin_onnx, engine, cfg)
    assert engine.is_file() and (tmp_path / "tiny.cache").is_file()
    assert meta["engine"]["scan_nodes"] > 0 and meta["engine"]["profile"]["max"][0] == 2

    backend = trtb.TensorRTBackend(engine)
    assert backend.metadata["preset"] == "tiny" and backend.metadata["engine"]["precision"] == "fp32"
    (inp,) = backend.inputs
    clips = np.random.default_rng(0).uniform(-1, 1, (3, *inp.shape[1:])).astype(np.float32)  # 3 > max: 2 chunks
    out = backend.run(clips)
    model = create_model("tiny", seed=0).eval()
    with torch.inference_mode():
        frame, motion = model.predict(torch.from_numpy(clips))
    # TensorRT may run FP32 convolutions and matmuls in TF32 (its default): a loose bound.
    for name, ref in (("frame_pred", frame), ("motion_pred", motion)):
        diff = np.abs(out[name] - ref.numpy()).max()
        print(f"{name}: max |TensorRT - PyTorch| = {diff:.2e}")
        assert diff < 2e-2, name

    result = bench_engine(engine, BenchConfig(batch=2, warmup=2, iterations=5))
    assert result["rows"][0]["gpu_compute"]["median_ms"] > 0
    from m2s2l_edge.efficiency.benchmarking import format_summary

    print(format_summary(result))


@pytest.mark.tensorrt
def test_build_and_run_an_int8_qdq_engine(tmp_path, plugin_onnx, write_frames):
    """`build --onnx int8.onnx`: TensorRT parses our Q/DQ graph (explicit quantization, SelectiveScan plugin in
    FP32) and the engine's predictions stay close to the INT8 graph's in ONNX Runtime."""
    plugin = _trt_ready()
    from m2s2l_edge.export.onnx_export import ExportConfig, load_source_model
    from m2s2l_edge.export.quantize import calibration_clips, export_int8
    from m2s2l_edge.runtime import create_backend

    model, source = load_source_model(preset="tiny", seed=0)
    footage = write_frames(tmp_path / "normal", 16, ext=".png", h=64, w=64)
    calibration = calibration_clips(footage, model.cfg.clip_len, model.cfg.image_size, count=8)
    onnx_path, _, _ = export_int8(model, tmp_path / "int8.onnx", ExportConfig(scan="plugin"), calibration,
                                  source=source, check=False)
    engine = tmp_path / "int8.engine"
    meta = build_engine(onnx_path, engine, EngineConfig(fp16=False, min_batch=1, opt_batch=1, max_batch=1,
                                                        plugin=plugin))
    assert meta["engine"]["precision"] in ("int8", "int8+fp16")
    clips = calibration.clips[:1, :-1]
    want = create_backend("onnxruntime", onnx_path).run(clips)
    got = trtb.TensorRTBackend(engine).run(clips)
    for name in want:
        assert np.abs(got[name] - want[name]).max() < 5e-2, name
