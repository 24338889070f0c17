"""INT8 by explicit quantization (export/quantize.py, `m2s2l-edge export --int8 --calibration-data`).

The Q/DQ graph is checked for what TensorRT's ONNX parser takes (its engine build runs in tests/test_tensorrt.py
where TensorRT exists), for what stays in floating point (the selective scans and every input they read), for the
metadata that identifies it, and it runs in ONNX Runtime on the CPU close to the FP32 model it came from.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from m2s2l_edge.artifacts.metadata import read_metadata  # noqa: E402
from m2s2l_edge.artifacts.onnx_graph import is_scan_node  # noqa: E402
from m2s2l_edge.cli.app import app  # noqa: E402
from m2s2l_edge.export.quantize import QUANTIZED_OP_TYPES, TENSORRT_REFUSED_OPS, check_qdq_graph  # noqa: E402


def invoke(*args):
    result = CliRunner().invoke(app, list(map(str, args)))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """Normal footage: a frames folder of a rendered surveillance scene (moving people on a background)."""
    import cv2

    from m2s2l_edge.data.synthetic import render_video

    folder = tmp_path_factory.mktemp("footage") / "frames"
    folder.mkdir()
    video = render_video(size=64, frames=24, seed=3)
    for i, frame in enumerate(video.frames):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, footage):
    """The tiny preset (seed 0) exported with `export --int8` (plugin flavour), and its FP32 twin."""
    root = tmp_path_factory.mktemp("int8")
    out = root / "tiny_int8.onnx"
    code, text, err = invoke("export", "--preset", "tiny", "--int8", "--calibration-data", footage, "--out", out,
                             "--threads", "2", "--json", root / "report.json")
    assert code == 0, err
    fp32 = root / "tiny_fp32.onnx"
    code, _, fp32_err = invoke("export", "--preset", "tiny", "--no-check", "--out", fp32)
    assert code == 0, fp32_err
    return {"int8": out, "fp32": fp32, "summary": text, "report": json.loads((root / "report.json").read_text())}


def _producers(model) -> dict:
    return {o: n for n in model.graph.node for o in n.output}


@pytest.mark.slow
def test_int8_graph_is_explicit_qdq_with_scans_and_their_inputs_in_float(int8_export):
    model = onnx.load(str(int8_export["int8"]))
    check_qdq_graph(model)  # int8 Q/DQ with zero point 0, nothing TensorRT cannot parse
    ops = {n.op_type for n in model.graph.node}
    assert not ops & set(TENSORRT_REFUSED_OPS)
    meta = read_metadata(int8_export["int8"])
    quant = meta.quantization
    assert meta.precision == "int8" and quant["calibration_method"] == "minmax"
    producers = _producers(model)
    kept = set(quant["excluded_nodes"])
    layers = [n for n in model.graph.node if n.op_type in QUANTIZED_OP_TYPES]
    quantized = [n for n in layers if n.name not in kept]
    assert kept and len(quantized) == quant["quantized_nodes"] > len(kept)
    for node in layers:
        # Activation input and weight: out of a DequantizeLinear exactly when the node is quantized.
        from_dq = [producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in node.input[:2]]
        assert all(from_dq) if node.name not in kept else not any(from_dq), (node.name, from_dq)
    # The scans and everything they read stay in floating point.
    scans = [n for n in model.graph.node if is_scan_node(n)]
    assert len(scans) == meta.scan_calls == 6
    for scan in scans:
        for name in scan.input:
            src = producers.get(name)
            assert src is None or src.op_type not in ("DequantizeLinear", "QuantizeLinear"), (scan.name, name)
    # Every node kept in float feeds a scan input through nodes that are neither convolutions nor linear layers.
    for name in kept:
        node = next(n for n in model.graph.node if n.name == name)
        frontier, reached = list(node.output), False
        consumers = {}
        for n in model.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        seen = set()
        while frontier and not reached:
            tensor = frontier.pop()
            for n in consumers.get(tensor, []):
                if is_scan_node(n):
                    reached = True
                elif n.op_type not in QUANTIZED_OP_TYPES and n.name not in seen:
                    seen.add(n.name)
                    frontier.extend(n.output)
        assert reached, name


@pytest.mark.slow
def test_int8_metadata_names_the_calibration_footage(int8_export, footage):
    calib = read_metadata(int8_export["int8"]).quantization["calibration_data"]
    h = hashlib.sha256()
    for path in sorted(footage.iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    assert calib["sha256"] == h.hexdigest()
    assert calib["frames"] == 24 and 1 <= calib["clips"] <= 64
    sidecar = json.loads(int8_export["int8"].with_name(int8_export["int8"].name + ".json").read_text())
    assert sidecar["precision"] == "int8" and sidecar["quantization"]["calibration_data"]["sha256"] == h.hexdigest()


@pytest.mark.slow
def test_int8_runs_in_onnx_runtime_close_to_fp32(int8_export, footage):
    """On normal footage (what it was calibrated for) the INT8 predictions differ from FP32's, by little: within
    a few grey levels of the [-1, 1] frame."""
    from m2s2l_edge.export.quantize import calibration_clips
    from m2s2l_edge.runtime import create_backend

    int8 = create_backend("onnxruntime", int8_export["int8"], threads=2)
    fp32 = create_backend("onnxruntime", int8_export["fp32"], threads=2)
    assert int8.metadata["precision"] == "int8"
    clips = calibration_clips(footage, 4, 64, count=6).clips[:, :-1]
    got, want = int8.run(clips), fp32.run(clips)
    for name in want:
        err = np.abs(got[name] - want[name])
        assert 0 < err.max() < 0.05 and err.mean() < 0.01, (name, err.max(), err.mean())
    report = int8_export["report"]["int8_vs_fp32"]
    assert report["frame_pred_psnr_vs_fp32_db"]["mean"] > 30
    assert "Calibrate `watch` anew" in int8_export["summary"]


def test_int8_options_are_checked_before_exporting(tmp_path, footage):
    code, _, err = invoke("export", "--preset", "tiny", "--int8", "--out", tmp_path / "m.onnx")
    assert code == 1 and "--int8 needs --calibration-data" in err
    code, _, err = invoke("export", "--preset", "tiny", "--calibration-data", footage, "--out", tmp_path / "m.onnx")
    assert code == 1 and "--calibration-data goes with --int8" in err
    code, _, err = invoke("export", "--preset", "tiny", "--int8", "--fp16", "--calibration-data", footage,
                          "--out", tmp_path / "m.onnx")
    assert code == 1 and "drop --fp16" in err
    code, _, err = invoke("export", "--preset", "tiny", "--int8", "--calibration-data", tmp_path / "none",
                          "--out", tmp_path / "m.onnx")
    assert code == 1 and "does not exist" in err
    assert not (tmp_path / "m.onnx").exists()


def test_check_qdq_graph_refuses_what_tensorrt_cannot_parse():
    from onnx import TensorProto
    from onnx import helper as oh

    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    dynamic = oh.make_graph([oh.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
                             oh.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "g", [x], [y])
    with pytest.raises(ValueError, match="TensorRT cannot parse: DynamicQuantizeLinear"):
        check_qdq_graph(oh.make_model(dynamic))
    scale = onnx.numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = onnx.numpy_helper.from_array(np.array(3, np.int8), "z")
    asymmetric = oh.make_graph([oh.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                                oh.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "g", [x], [y],
                               initializer=[scale, zero])
    with pytest.raises(ValueError, match="zero point 0"):
        check_qdq_graph(oh.make_model(asymmetric))
