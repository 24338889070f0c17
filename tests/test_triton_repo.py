"""`m2s2l-edge serve triton-repo`: the repository layout, and every config.pbtxt checked against Triton's own
model-configuration schema (the ModelConfig protobuf message tritonclient ships; text_format rejects unknown fields
and wrong types)."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from m2s2l_edge.cli.app import app

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient not installed (pip install 'm2s2l-edge[serve]')")
from google.protobuf import text_format  # noqa: E402 - after the skip: protobuf comes with tritonclient

from m2s2l_edge.serve import triton_repo as tr  # noqa: E402


def parse_config(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def invoke(*args):
    result = CliRunner().invoke(app, list(map(str, args)))
    return result.exit_code, result.stdout, result.stderr


def onnx_meta(path) -> dict:
    from m2s2l_edge.artifacts.metadata import read_metadata

    return read_metadata(path).to_dict()


def test_portable_repo_configs_follow_the_schema_and_the_metadata(exports, tmp_path):
    from m2s2l_edge.scoring.model import model_scoring
    from m2s2l_edge.scoring.stream import NormalStats
    from m2s2l_edge.watch.calibration import Calibration, identity_of, save

    calib = tmp_path / "calib.json"
    m = onnx_meta(exports["portable"])
    scoring = model_scoring(m, (m["clip_len"], (m["image_size"], m["image_size"])), score="stream")
    save(Calibration(score="stream", score_config=scoring.score, stats=NormalStats(30.0, 0.5), threshold=1.42,
                     false_alarms_per_hour=1.0, window=5, smoothing="mean", fps=25.0, count=100, stream_seconds=4.0,
                     model=identity_of(scoring, exports["portable"]),
                     sources=("λ from training footage",)), calib)
    repo = tmp_path / "repo"
    code, out, err = invoke("serve", "triton-repo", "--onnx", exports["portable"], "--out", repo, "--batch", "6",
                            "--calibration", calib, "--device", "cpu", "--threads", "2")
    assert code == 0, err
    assert "tritonserver --model-repository=" in out
    meta = onnx_meta(exports["portable"])
    t, s = meta["clip_len"], meta["image_size"]

    ort = parse_config(repo / tr.ONNX_MODEL / "config.pbtxt")
    assert ort.name == tr.ONNX_MODEL and ort.backend == "onnxruntime" and ort.max_batch_size == 6
    assert [(i.name, list(i.dims), i.data_type) for i in ort.input] == [
        ("clip", [t, 3, s, s], model_config_pb2.TYPE_FP32)]
    assert [(o.name, list(o.dims)) for o in ort.output] == [("frame_pred", [3, s, s]), ("motion_pred", [3, s, s])]
    assert ort.dynamic_batching.max_queue_delay_microseconds == tr.DEFAULT_QUEUE_DELAY_US
    assert ort.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    # The metadata travels in the parameters, unchanged (the non-ASCII λ of the calibration survives the escaping).
    assert json.loads(ort.parameters[tr.PARAM_METADATA].string_value) == meta
    assert json.loads(ort.parameters[tr.PARAM_CALIBRATION].string_value)["sources"] == ["λ from training footage"]
    assert float(ort.parameters["m2s2l.lambda"].string_value) == meta["lambda"]
    assert (repo / tr.ONNX_MODEL / "1" / "model.onnx").read_bytes() == exports["portable"].read_bytes()

    py = parse_config(repo / tr.PYTHON_MODEL / "config.pbtxt")
    assert py.backend == "python" and py.max_batch_size == 6 and py.HasField("dynamic_batching")
    assert py.parameters["m2s2l.threads"].string_value == "2"
    assert "m2s2l.python_scan" not in py.parameters
    assert (repo / tr.PYTHON_MODEL / "1" / "model.py").is_file()
    assert json.loads((repo / tr.METADATA_FILE).read_text())["calibration"]["threshold"] == 1.42
    assert os.access(repo / tr.SERVER_SCRIPT, os.X_OK)
    assert not (repo / tr.TENSORRT_MODEL).exists()


def test_plugin_flavour_is_served_by_the_onnxruntime_backend_with_our_op_library(exports, tmp_path):
    """Triton's onnxruntime backend loads a plugin-flavour ONNX with our native op library (model_operations), which
    is copied into the repository; the config parses with Triton's own ModelConfig message."""
    from m2s2l_edge.ops import ort_library

    if not ort_library.is_available():
        if os.environ.get("CI"):
            pytest.fail(f"CI must build the native ONNX Runtime op: {ort_library.unavailable_reason()}")
        pytest.skip(ort_library.unavailable_reason())
    repo = tmp_path / "repo"
    code, _, err = invoke("serve", "triton-repo", "--onnx", exports["plugin"], "--out", repo)
    assert code == 0, err
    ort = parse_config(repo / tr.ONNX_MODEL / "config.pbtxt")
    library = repo.resolve() / tr.PLUGIN_DIR / tr.ORT_OP_LIBRARY
    assert ort.backend == "onnxruntime" and list(ort.model_operations.op_library_filename) == [str(library)]
    assert library.read_bytes() == ort_library.library().read_bytes()
    assert ort.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    py = parse_config(repo / tr.PYTHON_MODEL / "config.pbtxt")
    assert py.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    code, _, err = invoke("serve", "triton-repo", "--onnx", exports["plugin"], "--out", tmp_path / "gpu", "--device",
                          "cuda")
    assert code == 1 and "plugin-flavour ONNX runs its SelectiveScan nodes in our CPU op" in err, err


def _engine_beside(onnx_path, tmp_path, *, profile=(1, 4, 16), plugin_required=True, recorded=None, config=None):
    """An engine file with the metadata JSON `m2s2l-edge build` writes beside it. The repository writer copies the
    plan without reading it (only a TensorRT runtime can), so its bytes here are arbitrary."""
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a real plan: copied verbatim")
    meta = onnx_meta(onnx_path)
    if config is not None:
        meta["config"] = {**meta["config"], **config}
    rest = [meta["clip_len"], 3, meta["image_size"], meta["image_size"]]
    meta["engine"] = {"profile": {k: [b, *rest] for k, b in zip(("min", "opt", "max"), profile, strict=True)},
                      "plugin_required": plugin_required, "plugin": recorded, "scan_nodes": 6}
    (tmp_path / "m.engine.json").write_text(json.dumps(meta))
    return engine


def test_engine_gets_a_tensorrt_plan_model_and_the_plugin_on_the_command_line(exports, tmp_path):
    engine = _engine_beside(exports["plugin"], tmp_path)
    plugin = tmp_path / "libm2s2l_plugins.so"
    plugin.write_bytes(b"\x7fELF plugin stand-in")
    repo = tmp_path / "repo"
    code, out, err = invoke("serve", "triton-repo", "--onnx", exports["portable"], "--engine", engine, "--plugin",
                            plugin, "--out", repo)
    assert code == 0, err
    trt = parse_config(repo / tr.TENSORRT_MODEL / "config.pbtxt")
    assert trt.platform == "tensorrt_plan" and trt.default_model_filename == "model.plan"
    assert trt.max_batch_size == 16  # the profile's largest batch
    assert trt.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert (repo / tr.PLUGIN_DIR / "libm2s2l_plugins.so").read_bytes() == plugin.read_bytes()
    assert f"--backend-config=tensorrt,plugins={(repo / 'plugins' / 'libm2s2l_plugins.so').resolve()}" in out
    assert "--backend-config=tensorrt,plugins=" in (repo / tr.SERVER_SCRIPT).read_text()
    # --batch beyond the profile is refused with the numbers.
    code, _, err = invoke("serve", "triton-repo", "--onnx", exports["portable"], "--engine", engine, "--plugin",
                          plugin, "--out", tmp_path / "repo2", "--batch", "32")
    assert code == 1 and err.count("\n") == 1 and "exceeds the engine's largest batch 16" in err


def test_engine_without_its_plugin_library_is_one_line(exports, tmp_path, monkeypatch):
    monkeypatch.delenv("M2S2L_PLUGIN_LIB", raising=False)
    monkeypatch.chdir(tmp_path)
    from m2s2l_edge.runtime import tensorrt_lib

    if any((d / tensorrt_lib.PLUGIN_LIB_NAME).is_file() for d in tensorrt_lib.plugin_search_dirs()):
        pytest.skip("a built plugin library is on the search path here")
    engine = _engine_beside(exports["plugin"], tmp_path, recorded=str(tmp_path / "gone" / "libm2s2l_plugins.so"))
    code, _, err = invoke("serve", "triton-repo", "--onnx", exports["portable"], "--engine", engine,
                          "--out", tmp_path / "repo")
    assert code == 3 and err.startswith("error: ") and err.count("\n") == 1
    assert "plugin library" in err
    assert not (tmp_path / "repo").exists()
    code, _, err = invoke("serve", "triton-repo", "--onnx", exports["portable"], "--engine", engine, "--plugin",
                          tmp_path / "missing.so", "--out", tmp_path / "repo")
    assert code == 1 and "missing.so does not exist" in err and err.count("\n") == 1


def test_engine_of_another_model_is_refused(exports, tmp_path):
    engine = _engine_beside(exports["plugin"], tmp_path, config={"clip_len": 7})
    plugin = tmp_path / "libm2s2l_plugins.so"
    plugin.write_bytes(b"x")
    code, _, err = invoke("serve", "triton-repo", "--onnx", exports["portable"], "--engine", engine, "--plugin",
                          plugin, "--out", tmp_path / "repo")
    assert code == 1 and "was not built from the model of --onnx" in err and err.count("\n") == 1


def test_existing_repository_folder_is_refused_unless_overwrite(exports, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "keep.txt").write_text("earlier work")
    code, out, err = invoke("serve", "triton-repo", "--onnx", exports["portable"], "--out", repo)
    assert code == 1 and err == f"error: --out {repo} exists; pass --overwrite to replace it\n"
    assert (repo / "keep.txt").read_text() == "earlier work" and not (repo / tr.ONNX_MODEL).exists()
    code, _, err = invoke("serve", "triton-repo", "--onnx", exports["portable"], "--out", repo, "--overwrite")
    assert code == 0, err
    assert not (repo / "keep.txt").exists() and (repo / tr.ONNX_MODEL / "config.pbtxt").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".repo")]  # no staging or old copy left behind


def test_bad_inputs_are_one_line(exports, tmp_path):
    not_ours = tmp_path / "x.onnx"
    not_ours.write_bytes(b"garbage")
    not_a_calibration = tmp_path / "x.calib.json"
    not_a_calibration.write_text('{"threshold": 0.42}')
    for args, code_wanted, text in (
        (("--onnx", exports["portable"], "--out", tmp_path / "r", "--calibration", not_a_calibration), 1,
         "is not an m2s2l-edge calibration"),
        (("--onnx", tmp_path / "none.onnx", "--out", tmp_path / "r"), 1, "does not exist"),
        (("--onnx", not_ours, "--out", tmp_path / "r"), 1, "not a readable ONNX model"),
        (("--out", tmp_path / "r"), 1, "--onnx MODEL.onnx is required"),
        (("--onnx", exports["portable"], "--out", tmp_path / "r", "--plugin", not_ours), 1, "--plugin goes with"),
        (("--onnx", exports["portable"], "--out", tmp_path / "r", "--device", "gpu"), 1, "expected cpu, cuda"),
    ):
        code, _, err = invoke("serve", "triton-repo", *args)
        assert code == code_wanted and err.startswith("error: ") and err.count("\n") == 1 and text in err, err
        assert not (tmp_path / "r").exists()


def test_config_text_quotes_what_protobuf_reads_back():
    text = tr.config_text(name='a"b\\c λ', backend="python", max_batch_size=0, input_name="clip",
                          input_dims=(2, 4, 3, 8, 8), outputs=(("y", (2, 3, 8, 8)),), queue_delay_us=100,
                          instance_kind=None, parameters={"k": 'quote " and\nnewline'})
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert cfg.name == 'a"b\\c λ' and cfg.parameters["k"].string_value == 'quote " and\nnewline'
    assert not cfg.HasField("dynamic_batching")  # max_batch_size 0: Triton cannot batch, so none is written
    assert list(cfg.input[0].dims) == [2, 4, 3, 8, 8]
