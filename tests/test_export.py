"""`m2s2l-edge export`: both flavours and both precisions of the tiny preset, checked graph by graph and in ONNX
Runtime.

One trace per precision serves both flavours (``trace_onnx``); the exported files are cached for the session under
pytest's base temp folder, where tests/test_runtime.py and tests/test_bench_cli.py find them too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime_extensions")

import onnx  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from m2s2l_edge.artifacts import metadata as meta_mod  # noqa: E402
from m2s2l_edge.cli.app import app  # noqa: E402
from m2s2l_edge.export.onnx_export import (  # noqa: E402
    ExportConfig,
    export_and_check,
    fold_scan_parameters,
    load_source_model,
    trace_onnx,
)
from m2s2l_edge.export.parity import TOLERANCES, ParityError, Tolerance  # noqa: E402
from m2s2l_edge.export.scan_onnx import lower_scans, scan_op_schema  # noqa: E402
from m2s2l_edge.ops import selective_scan_ref, spec  # noqa: E402

FLAVOURS = ("plugin", "portable")


def tiny_exports(tmp_path_factory, precision: str) -> dict:
    """{"plugin": path, "portable": path, "reports": {...}} for the tiny preset (seed 0, dynamic batch), exported once
    per session with the parity check on."""
    root = tmp_path_factory.getbasetemp() / f"tiny_exports_{precision}"
    paths = {s: root / f"tiny_{s}_{precision}.onnx" for s in FLAVOURS}
    reports_file = root / "reports.json"
    if not reports_file.exists():
        root.mkdir(exist_ok=True)
        model, source = load_source_model(preset="tiny", seed=0)
        config = ExportConfig(precision=precision, dynamic_batch=True)
        traced = trace_onnx(model, config)
        reports = {}
        for scan in FLAVOURS:
            _, report = export_and_check(model, paths[scan], dataclasses.replace(config, scan=scan), source=source,
                                         dataset="ped2", check=True, threads=2, traced=traced)
            reports[scan] = report.as_dict()
        reports_file.write_text(json.dumps(reports))
    return {**paths, "reports": json.loads(reports_file.read_text())}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    return tiny_exports(tmp_path_factory, "fp32")


@pytest.fixture(scope="module")
def fp16(tmp_path_factory):
    return tiny_exports(tmp_path_factory, "fp16")


@pytest.fixture(scope="module")
def tiny_model():
    model, _ = load_source_model(preset="tiny", seed=0)
    return model


def scan_calls(model) -> int:
    """Scan calls of one forward pass, counted by the profiler on a model built with the custom op (independent of
    the exporter's own count)."""
    from m2s2l_edge.export.onnx_export import export_copy

    op_model = export_copy(model, "fp32")
    clip = torch.zeros(1, model.cfg.clip_len, 3, model.cfg.image_size, model.cfg.image_size)
    with torch.inference_mode(), torch.profiler.profile() as prof:
        op_model.predict(clip)
    return sum(1 for e in prof.events() if e.name == "m2s2l::selective_scan")


def _types(model) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


# --- graphs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("scan", FLAVOURS)
def test_checker_full_check_passes(request, precision, scan):
    paths = request.getfixturevalue(precision)
    onnx.checker.check_model(onnx.load(str(paths[scan])), full_check=True)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_plugin_graph_has_one_node_per_scan_call(request, precision, tiny_model):
    model = onnx.load(str(request.getfixturevalue(precision)["plugin"]))
    nodes = [n for n in model.graph.node if n.op_type == spec.OP_NAME]
    assert len(nodes) == scan_calls(tiny_model) == 6  # 3 SS2D (K=4) + 3 temporal Mamba blocks (K=1)
    assert {n.domain for n in nodes} == {spec.ONNX_DOMAIN}
    assert {(o.domain, o.version) for o in model.opset_import if o.domain == spec.ONNX_DOMAIN} == {
        (spec.ONNX_DOMAIN, spec.ONNX_DOMAIN_VERSION)}
    inits = {i.name: i for i in model.graph.initializer}
    types = _types(model)
    act = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.FLOAT
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"delta_softplus": 1, "plugin_version": spec.PLUGIN_VERSION.encode(),
                         "plugin_namespace": spec.PLUGIN_NAMESPACE.encode()}
        assert {a.name: a.type for a in node.attribute}["delta_softplus"] == onnx.AttributeProto.INT
        assert len(node.input) in (7, 8)  # the temporal blocks pass the gate z as 8th input
        named = dict(zip(spec.INPUT_NAMES, node.input, strict=False))
        for role in ("A", "D", "delta_bias"):
            assert named[role] in inits, f"{role} of {node.name} is computed at run time"
            assert types[named[role]] == onnx.TensorProto.FLOAT  # parameters stay FP32 in both precisions
        for role in ("u", "delta", "B", "C", "z"):
            if role in named:
                assert types[named[role]] == act, (node.name, role)
        assert types[node.output[0]] == act
        a = onnx.numpy_helper.to_array(inits[named["A"]])
        assert a.dtype == np.float32 and np.all(a < 0)
    assert sum(len(n.input) == 8 for n in nodes) == 3


def test_plugin_A_is_minus_exp_A_log_of_the_float32_weights(fp16, tiny_model):
    # Even in FP16 the folded A comes from the float32 A_log, not from an FP16-rounded one.
    model = onnx.load(str(fp16["plugin"]))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    want = [(-torch.exp(m.A_log.detach().float())).numpy() for m in tiny_model.modules() if hasattr(m, "A_log")]
    got = [inits[n.input[2]] for n in model.graph.node if n.op_type == spec.OP_NAME]
    for a in got:
        assert any(a.shape == w.shape and np.array_equal(a, w) for w in want)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("scan", FLAVOURS)
def test_only_standard_ops_besides_selective_scan(request, precision, scan):
    model = onnx.load(str(request.getfixturevalue(precision)[scan]))
    allowed = {"", "ai.onnx"} | ({spec.ONNX_DOMAIN} if scan == "plugin" else set())
    assert {n.domain for n in model.graph.node} <= allowed
    assert not [n for n in model.graph.node if n.op_type.lower().startswith("aten")]
    assert len(model.functions) == 0
    if scan == "portable":
        assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
        assert sum(n.op_type == "Scan" for n in model.graph.node) == 6


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_graph_is_the_inference_rewritten_model(request, precision, tiny_model):
    """No BatchNormalization left, and each SS2D's parallel depth-wise convolutions are one, of the largest size."""
    from m2s2l_edge.layers.ssm import SS2D

    model = onnx.load(str(request.getfixturevalue(precision)["plugin"]))
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    groups = {n.name: next((a.i for a in n.attribute if a.name == "group"), 1) for n in model.graph.node}
    # 2-D depth-wise convolutions (weight (C, 1, kh, kw), group C): only SS2D has them (TMB's are 1-D).
    kernels = [
        shapes[n.input[1]][2:] for n in model.graph.node
        if n.op_type == "Conv" and len(shapes.get(n.input[1], ())) == 4 and groups[n.name] == shapes[n.input[1]][0] > 1
    ]  # fmt: skip
    ss2d = [m for m in tiny_model.modules() if isinstance(m, SS2D)]
    assert all(len(m.ms_convs) > 1 for m in ss2d)  # the source model has several per SS2D
    assert kernels == [max(c.kernel_size for c in m.ms_convs) for m in ss2d]


def test_fp16_graph_has_explicit_casts_and_float32_io(fp16):
    model = onnx.load(str(fp16["portable"]))
    io = [*model.graph.input, *model.graph.output]
    assert {v.type.tensor_type.elem_type for v in io} == {onnx.TensorProto.FLOAT}
    # The clip is read by a Shape (the dynamic batch) and otherwise only through its Cast to FP16.
    consumers = [n for n in model.graph.node if "clip" in n.input and n.op_type != "Shape"]
    assert [n.op_type for n in consumers] == ["Cast"]
    # Every portable scan widens its FP16 inputs before the recurrence and narrows y after it.
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.name.startswith("portable_scan_")]
    to = [onnx.helper.get_attribute_value(a) for n in casts for a in n.attribute if a.name == "to"]
    assert to.count(onnx.TensorProto.FLOAT) >= 6 * 4 and to.count(onnx.TensorProto.FLOAT16) == 6


# --- numerics -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("scan", FLAVOURS)
def test_parity_with_pytorch(request, precision, scan):
    """The fixture's export already passed its own check (export_and_check raises otherwise); this holds the export to
    bounds stated here, independent of ``parity.TOLERANCES``: the acceptance bound of issue 4 for FP32 (1e-4
    relative; measured 3e-7 for this fresh tiny model) and, for FP16, 2e-3 relative (measured 3.8e-4), and checks
    that the reference was the independent one."""
    report = request.getfixturevalue(precision)["reports"][scan]
    assert report["reference"] == "PyTorch float64, pure-PyTorch scan ('torch')"
    quantities = {(r["inputs"], r["batch"], r["quantity"]) for r in report["rows"]}
    assert {("random", 1, "frame_pred"), ("random", 3, "motion_pred"), ("synthetic", 3, "score")} <= quantities
    assert all(np.isfinite(r["max_abs"]) for r in report["rows"])
    bound = 1e-4 if precision == "fp32" else 2e-3
    worst = max(report["rows"], key=lambda r: r["rel"])
    assert worst["rel"] <= bound, worst
    if precision == "fp32":
        assert TOLERANCES["fp32"].atol == 0 and TOLERANCES["fp32"].rtol <= bound  # the check is no looser either


@pytest.mark.slow
def test_separable_decoder_exports_with_parity(tmp_path):
    """A model with depth-wise separable decoders exports (both flavours) and passes the parity check in ONNX
    Runtime; its graph holds grouped convolutions, still one SelectiveScan node per scan call in the plugin flavour."""
    from m2s2l_edge.models import create_model

    model = create_model("tiny", seed=0, decoder_conv="separable").eval()
    config = ExportConfig(precision="fp32", dynamic_batch=True)
    traced = trace_onnx(model, config)
    for scan in FLAVOURS:
        path = tmp_path / f"sep_{scan}.onnx"
        _, report = export_and_check(model, path, dataclasses.replace(config, scan=scan), dataset="ped2", check=True,
                                     threads=2, traced=traced)
        rows = report.as_dict()["rows"]
        assert rows and max(r["rel"] for r in rows) <= 1e-4
        graph = onnx.load(path).graph
        groups = [a.i for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
        assert any(g > 1 for g in groups)
        if scan == "plugin":
            assert sum(n.op_type == spec.OP_NAME for n in graph.node) == scan_calls(model)


@pytest.mark.slow
@pytest.mark.parametrize("option", [{"spatial_mlp_ratios": (0.0, 2.0, 2.0)}, {"spatial_input": "last"}],
                         ids=["no-mlp-on-the-finest-scale", "spatial-input-last"])
def test_design_options_export_with_parity(tmp_path, option):
    """A model whose finest spatial scale has no MLP (spatial_mlp_ratios 0 there), or whose spatial encoders see the
    last frame alone (spatial_input=last), exports in the plugin flavour and passes the parity check in ONNX Runtime,
    with one SelectiveScan node per scan call."""
    from m2s2l_edge.models import create_model

    model = create_model("tiny", seed=0, **option).eval()
    path = tmp_path / "option.onnx"
    _, report = export_and_check(model, path, ExportConfig(precision="fp32", scan="plugin"), dataset="ped2",
                                 check=True, threads=2)
    rows = report.as_dict()["rows"]
    assert rows and max(r["rel"] for r in rows) <= 1e-4
    graph = onnx.load(path).graph
    assert sum(n.op_type == spec.OP_NAME for n in graph.node) == scan_calls(model)


def test_parity_reference_is_independent_of_the_kernel_in_onnx_runtime(tmp_path, tiny_model, monkeypatch):
    """A fault in the C++ kernel that computes the SelectiveScan nodes inside ONNX Runtime fails the parity check:
    the reference is the float64 model with the pure-PyTorch scan, never that kernel (were it, the fault would be on
    both sides and cancel out). The model has BatchNorm statistics from data: in the fresh model the outputs hardly
    depend on the scans, so no scan fault could show (``parity.with_batchnorm_statistics``)."""
    from m2s2l_edge.export import parity
    from m2s2l_edge.ops import cpu_kernel
    from m2s2l_edge.runtime import ort_scan

    if not cpu_kernel.is_available() and shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler (g++ or $CXX): ONNX Runtime's scan runs the 'torch' path here")
    assert ort_scan.scan_backend() == "cpu", cpu_kernel.unavailable_reason()
    cfg = tiny_model.cfg
    clips = torch.rand(4, cfg.clip_len, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(1))
    model = parity.with_batchnorm_statistics(tiny_model, clips * 2 - 1)
    reference = parity.reference_model(model)
    assert {p.dtype for p in reference.parameters()} == {torch.float64}
    assert {m.scan_backend for m in reference.modules() if hasattr(m, "scan_backend")} == {"torch"}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the original is left as it was

    out = tmp_path / "tiny_plugin.onnx"
    export_and_check(model, out, ExportConfig(scan="plugin", batch=1), check=False)
    # The Python op calls the kernel through cpu_kernel.selective_scan_cpu, where a fault can be planted; the native op
    # runs the same C++ kernel (tests/test_ort_op.py checks it against the float64 reference on its own).
    report = parity.check_parity(out, model, threads=1, scan_op="python")
    assert report.passed and report.reference == parity.REFERENCE, report.summary()

    real = cpu_kernel.selective_scan_cpu

    def last_step_dropped(*args, **kwargs):  # an off-by-one at the end of the sequence
        y = real(*args, **kwargs).clone()
        y[..., -1] = 0
        return y

    monkeypatch.setattr(cpu_kernel, "selective_scan_cpu", last_step_dropped)
    report = parity.check_parity(out, model, threads=1, scan_op="python")
    assert not report.passed, report.summary()
    assert report.worst().rel > 100 * TOLERANCES["fp32"].rtol


def test_dynamic_batch_runs_batch_1_and_3(fp32):
    import onnxruntime as ort

    model = onnx.load(str(fp32["portable"]))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(fp32["portable"]), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        clips = np.random.default_rng(b).uniform(-1, 1, (b, 4, 3, 64, 64)).astype(np.float32)
        frame, motion = session.run(None, {"clip": clips})
        assert frame.shape == motion.shape == (b, 3, 64, 64)


def _single_scan_model(kd: int, k: int, n: int, length: int, gated: bool, dtype):
    """A one-node plugin-flavour graph: SelectiveScan over graph inputs, A / D / delta_bias as initializers."""
    from onnx import TensorProto
    from onnx import helper as oh

    t = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    rng = np.random.default_rng(kd + k + n + length + gated)
    params = {
        "A": -np.exp(rng.normal(size=(kd, n))).astype(np.float32),
        "D": rng.normal(size=kd).astype(np.float32),
        "delta_bias": rng.normal(size=kd).astype(np.float32),
    }
    shapes = {"u": ["b", kd, length], "delta": ["b", kd, length], "B": ["b", k, n, length],
              "C": ["b", k, n, length], "z": ["b", kd, length]}
    names = list(spec.INPUT_NAMES[:7]) + (["z"] if gated else [])
    node = oh.make_node(spec.OP_NAME, names, ["y"], domain=spec.ONNX_DOMAIN, delta_softplus=1,
                        plugin_version=spec.PLUGIN_VERSION, plugin_namespace=spec.PLUGIN_NAMESPACE)
    graph = oh.make_graph(
        [node], "scan", [oh.make_tensor_value_info(x, t, shapes[x]) for x in names if x in shapes],
        [oh.make_tensor_value_info("y", t, ["b", kd, length])],
        initializer=[onnx.numpy_helper.from_array(v, name) for name, v in params.items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18), oh.make_opsetid(spec.ONNX_DOMAIN, 1)])
    return model, params


@pytest.mark.parametrize("form", ["in_body", "precompute"])
@pytest.mark.parametrize(("kd", "k", "gated", "dtype"), [(8, 4, False, np.float32), (6, 1, True, np.float32),
                                                         (8, 4, True, np.float16)])
def test_portable_scan_matches_the_reference(form, kd, k, gated, dtype):
    import onnxruntime as ort

    n, length, batch = 3, 9, 2
    model, params = _single_scan_model(kd, k, n, length, gated, dtype)
    portable = lower_scans(model, form=form)
    onnx.checker.check_model(portable, full_check=True)
    rng = np.random.default_rng(0)
    feeds = {"u": rng.normal(size=(batch, kd, length)), "B": rng.normal(size=(batch, k, n, length)),
             "C": rng.normal(size=(batch, k, n, length)), "z": rng.normal(size=(batch, kd, length)),
             # Large steps too: softplus(delta) up to ~100 must neither overflow nor lose the state (exp(dt·A) ≈ 0).
             "delta": np.concatenate([rng.normal(size=(batch, kd, length - 2)),
                                      np.full((batch, kd, 2), 100.0)], axis=-1)}
    feeds = {x: v.astype(dtype) for x, v in feeds.items() if gated or x != "z"}
    (y,) = ort.InferenceSession(portable.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    as64 = {x: torch.from_numpy(v.astype(np.float64)) for x, v in {**feeds, **params}.items()}
    want = selective_scan_ref(as64["u"], as64["delta"], as64["A"], as64["B"], as64["C"], as64["D"], as64.get("z"),
                              as64["delta_bias"], True).numpy()
    assert y.dtype == dtype and np.all(np.isfinite(y))
    tol = 2e-3 if dtype == np.float16 else 1e-5  # FP16: one rounding of y (and of the inputs, already in feeds)
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=tol, atol=tol * np.abs(want).max())


def test_scan_parameters_fold_into_initializers():
    from onnx import helper as oh

    model, params = _single_scan_model(8, 4, 3, 5, False, np.float32)
    graph = model.graph
    a_log = np.log(-params["A"])
    kept = [i for i in graph.initializer if i.name != "A"]
    del graph.initializer[:]
    graph.initializer.extend([*kept, onnx.numpy_helper.from_array(a_log.astype(np.float32), "A_log")])
    nodes = [oh.make_node("Exp", ["A_log"], ["A_exp"]), oh.make_node("Neg", ["A_exp"], ["A"]), *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    assert fold_scan_parameters(model) == 1
    assert [n.op_type for n in graph.node] == [spec.OP_NAME]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    assert "A_log" not in inits
    np.testing.assert_allclose(inits["A"], params["A"], rtol=1e-6)


def test_schema_lists_the_plugin_contract():
    schema = scan_op_schema()
    assert [i.name for i in schema.inputs] == list(spec.INPUT_NAMES)
    assert set(schema.attributes) == {"delta_softplus", "plugin_version", "plugin_namespace"}
    assert schema.domain == spec.ONNX_DOMAIN


# --- metadata -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scan", FLAVOURS)
def test_metadata_round_trips(fp32, scan, tiny_model):
    path = fp32[scan]
    meta = meta_mod.read_metadata(path)
    assert meta.model_config == tiny_model.cfg.replace(scan_backend="auto")
    assert (meta.preset, meta.clip_len, meta.image_size) == ("tiny", 4, 64)
    assert (meta.scan, meta.precision, meta.batch, meta.opset, meta.scan_calls) == (scan, "fp32", "dynamic", 18, 6)
    assert meta.normalization == "[-1, 1]" and meta.dataset == "ped2" and meta.lam == 0.6
    assert {"m2s2l_edge", "torch", "onnx"} <= set(meta.versions)
    assert meta.rewrites == {"folded_batchnorm": 29, "merged_ms_convs": 3}
    assert meta.input_shape == ("dynamic", 4, 3, 64, 64)
    sidecar = json.loads(meta_mod.sidecar_path(path).read_text())
    assert meta_mod.ExportMetadata.from_dict(sidecar) == meta
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["preset"] == "tiny" and props["lambda"] == "0.6" and props["scan"] == scan
    # Without the ONNX file the sidecar alone still describes the model (what an engine next to it relies on).
    engine = path.with_suffix(".engine")
    engine.write_bytes(b"not an onnx")
    meta_mod.sidecar_path(engine).write_text(meta_mod.sidecar_path(path).read_text())
    assert meta_mod.read_metadata(engine) == meta


def test_config_validation():
    with pytest.raises(ValueError, match="unknown scan flavour 'fast'; valid: plugin, portable"):
        ExportConfig(scan="fast")
    with pytest.raises(ValueError, match="unknown precision"):
        ExportConfig(precision="int8")
    with pytest.raises(ValueError, match="opset must be >= 18"):
        ExportConfig(opset=17)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        ExportConfig(batch=0)


@pytest.mark.slow
def test_failed_parity_publishes_nothing(tmp_path, tiny_model, monkeypatch):
    # A bound no export can meet: the check fails on the written temporary file, which is then removed.
    import m2s2l_edge.export.parity as parity

    monkeypatch.setitem(parity.TOLERANCES, "fp32", Tolerance(rtol=0.0))
    config = ExportConfig(scan="portable", dynamic_batch=False, batch=1)
    traced = trace_onnx(tiny_model, config)
    out = tmp_path / "m.onnx"
    with pytest.raises(ParityError) as info:
        export_and_check(tiny_model, out, config, traced=traced, check=True, threads=1)
    assert not info.value.report.passed and "FAILED" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    # The same trace exports fine without the check; a fixed batch serves any number of clips in chunks.
    export_and_check(tiny_model, out, config, traced=traced, check=False)
    from m2s2l_edge.runtime import create_backend

    backend = create_backend("onnxruntime", out, threads=1)
    assert backend.inputs[0].shape == (1, 4, 3, 64, 64)
    clips = np.random.default_rng(0).uniform(-1, 1, (3, 4, 3, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        want = tiny_model.predict(torch.from_numpy(clips))[0].numpy()
    np.testing.assert_allclose(backend.run(clips)["frame_pred"], want, atol=1e-5)


# --- CLI: bad input is one line, a non-zero exit, and no file -----------------------------------------------------


def _one_line_error(result, code: int, *fragments: str) -> None:
    lines = result.output.strip().splitlines()
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for f in fragments:
        assert f in lines[0], lines[0]


def _no_onnx_left(folder) -> None:
    assert not [p for p in folder.rglob("*") if ".onnx" in p.name], list(folder.rglob("*"))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_model):
    from m2s2l_edge.artifacts.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_checkpoint(path, tiny_model, extra={"dataset": "avenue", "normal_change": 0.0125})
    return path


def test_cli_missing_checkpoint(tmp_path):
    r = CliRunner().invoke(app, ["export", "--weights", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "m.onnx")])
    _one_line_error(r, 1, "does not exist")
    _no_onnx_left(tmp_path)


def test_cli_corrupt_checkpoint(tmp_path, tiny_checkpoint):
    # A truncated file: an interrupted copy or download.
    bad = tmp_path / "bad.ckpt"
    data = tiny_checkpoint.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    r = CliRunner().invoke(app, ["export", "--weights", str(bad), "--out", str(tmp_path / "m.onnx")])
    _one_line_error(r, 1, "corrupt")
    _no_onnx_left(tmp_path)


def test_cli_checkpoint_of_another_preset(tmp_path, tiny_checkpoint):
    r = CliRunner().invoke(app, ["export", "--preset", "small", "--weights", str(tiny_checkpoint),
                                 "--out", str(tmp_path / "m.onnx")])
    _one_line_error(r, 1, "'tiny'", "'small'")
    _no_onnx_left(tmp_path)


def test_cli_unknown_flavour_and_format(tmp_path):
    r = CliRunner().invoke(app, ["export", "--preset", "tiny", "--scan", "fast", "--out", str(tmp_path / "m.onnx")])
    _one_line_error(r, 1, "unknown scan flavour 'fast'", "plugin, portable")
    r = CliRunner().invoke(app, ["export", "--preset", "tiny", "--format", "plan", "--out", str(tmp_path / "m.onnx")])
    _one_line_error(r, 1, "unknown format 'plan'", "onnx, engine")
    _no_onnx_left(tmp_path)


def test_output_names_say_every_setting_and_the_engine_keeps_its_onnx_beside_it(tmp_path):
    """Default names differ wherever the graph does (two exports never replace each other); with --format engine,
    --out names the engine and the ONNX it is built from goes beside it, and an --out that is not an engine is
    refused before anything is loaded."""
    from m2s2l_edge.export.outputs import default_engine_path, default_export_paths, export_paths

    def name(**kw):
        return default_export_paths("tiny", "onnx", **{"scan": "plugin", "precision": "fp32", "batch": 1,
                                                      "dynamic": False, **kw})[0].name

    names = {name(), name(scan="portable"), name(precision="fp16"), name(precision="int8"), name(batch=4),
             name(dynamic=True)}
    assert len(names) == 6 and name() == "m2s2l_tiny_plugin_fp32_b1.onnx" and "dynamic" in name(dynamic=True)
    assert default_export_paths("tiny", "engine", scan="plugin", precision="fp16", batch=2, dynamic=False) == (
        Path("m2s2l_tiny_plugin_fp16_b2.onnx"), Path("m2s2l_tiny_plugin_fp16_b2.engine"))
    assert export_paths(tmp_path / "m.engine", "engine") == (tmp_path / "m.onnx", tmp_path / "m.engine")
    assert export_paths(tmp_path / "m.onnx", "onnx") == (tmp_path / "m.onnx", None)
    assert default_engine_path(tmp_path / "m.onnx") == tmp_path / "m.engine"
    r = CliRunner().invoke(app, ["export", "--preset", "tiny", "--format", "engine", "--out", str(tmp_path / "m.onnx")])
    _one_line_error(r, 1, "--out names the engine (*.engine)")
    _no_onnx_left(tmp_path)


def test_cli_unwritable_output(tmp_path, tiny_checkpoint):
    r = CliRunner().invoke(app, ["export", "--weights", str(tiny_checkpoint), "--out",
                                 str(tmp_path / "missing" / "m.onnx")])
    _one_line_error(r, 1, "does not exist")
    r = CliRunner().invoke(app, ["export", "--weights", str(tiny_checkpoint), "--out", str(tmp_path)])
    _one_line_error(r, 1, "is a folder")
    _no_onnx_left(tmp_path)


def test_cli_read_only_folder(tmp_path, tiny_checkpoint):
    """An unwritable folder is refused before the export. For root (whom os.access lets write anywhere) the folder
    is sysfs, where even root cannot create a file."""
    import os
    import tempfile

    if os.geteuid() == 0:
        ro = Path("/sys/kernel")
        try:
            fd, name = tempfile.mkstemp(dir=ro)
        except OSError:
            pass
        else:
            os.close(fd)
            os.unlink(name)
            pytest.skip("root can create files in /sys/kernel here, so no folder is unwritable for root")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
    try:
        r = CliRunner().invoke(app, ["export", "--weights", str(tiny_checkpoint), "--out", str(ro / "m.onnx")])
        _one_line_error(r, 1, "cannot write --out", "not writable")
    finally:
        if ro.is_relative_to(tmp_path):
            ro.chmod(0o700)
    assert not (ro / "m.onnx").exists()
    _no_onnx_left(tmp_path)


@pytest.mark.slow
def test_cli_export_from_checkpoint(tmp_path, tiny_checkpoint):
    out = tmp_path / "tiny.onnx"
    r = CliRunner().invoke(app, ["export", "--weights", str(tiny_checkpoint), "--preset", "tiny", "--scan", "plugin",
                                 "--fp16", "--batch", "2", "--out", str(out), "--threads", "2"])
    assert r.exit_code == 0, r.output
    assert "parity with PyTorch" in r.output and f"wrote {out}" in r.output
    meta = meta_mod.read_metadata(out)
    # λ from the checkpoint's data set, batch fixed, FP16, plugin.
    assert (meta.dataset, meta.lam, meta.batch, meta.precision, meta.scan) == ("avenue", 0.4, 2, "fp16", "plugin")
    assert "checkpoint tiny.ckpt" in meta.weights
    assert meta.normal_change == 0.0125  # the score's motion reference travels with the model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx", "tiny.onnx.json"]


def test_export_options_that_do_not_go_together_are_refused_before_anything_loads(tmp_path):
    """The rules `export` applies before loading a model, called as a script would call them."""
    from m2s2l_edge.export.outputs import check_export_options

    footage = tmp_path / "normal.mp4"
    footage.write_bytes(b"")
    ok = {"output_format": "onnx", "weights": None, "preset": "tiny", "plugin": None, "int8": False,
          "calibration_data": None, "fp16": False}
    check_export_options(**ok)
    check_export_options(**{**ok, "int8": True, "calibration_data": footage})
    refused = [
        ({"output_format": "plan"}, "unknown format 'plan'; valid: onnx, engine"),
        ({"check": False, "report_wanted": True}, "--json writes the parity report, which --no-check skips"),
        ({"preset": None}, "give --weights"),
        ({"plugin": Path("x.so")}, "--plugin goes with --format engine"),
        ({"int8": True}, "--int8 needs --calibration-data"),
        ({"calibration_data": footage}, "--calibration-data goes with --int8"),
        ({"int8": True, "calibration_data": footage, "fp16": True}, "drop --fp16"),
        ({"int8": True, "calibration_data": footage, "output_format": "engine"}, "m2s2l-edge build --onnx"),
        ({"int8": True, "calibration_data": tmp_path / "none"}, "does not exist"),
    ]
    for change, message in refused:
        with pytest.raises((ValueError, FileNotFoundError), match=message.replace("(", r"\(")):
            check_export_options(**{**ok, **change})
    check_export_options(**{**ok, "check": False})  # --no-check alone is fine: there is no report to write


def test_export_paths_name_an_onnx_file_and_list_every_file_written(tmp_path):
    from m2s2l_edge.export.outputs import default_export_paths, export_paths, written_files

    with pytest.raises(IsADirectoryError, match="is a folder"):
        export_paths(tmp_path, "onnx")
    with pytest.raises(ValueError, match=r"must end in \.onnx"):
        export_paths(tmp_path / "m.engine", "onnx")
    assert written_files(tmp_path / "m.onnx") == (tmp_path / "m.onnx", tmp_path / "m.onnx.json")
    assert written_files(*export_paths(tmp_path / "m.engine", "engine")) == (
        tmp_path / "m.onnx", tmp_path / "m.onnx.json", tmp_path / "m.engine")
    # An INT8 export quantizes an FP32 graph; its default name says int8.
    assert default_export_paths("tiny", "onnx", scan="plugin", precision="fp32", batch=1, dynamic=False,
                                int8=True)[0] == Path("m2s2l_tiny_plugin_int8_b1.onnx")


def test_the_engine_an_export_builds_keeps_its_precision_and_batch():
    from m2s2l_edge.export.engine import export_engine_config

    fixed = export_engine_config(fp16=True, batch=4, dynamic=False)
    assert (fixed.fp16, fixed.min_batch, fixed.opt_batch, fixed.max_batch) == (True, 4, 4, 4)
    dynamic = export_engine_config(fp16=False, batch=4, dynamic=True, plugin=Path("p.so"))
    assert (dynamic.fp16, dynamic.min_batch, dynamic.opt_batch, dynamic.max_batch) == (False, 1, 4, 4)
    assert dynamic.plugin == Path("p.so")


def test_export_record_says_what_was_written_and_a_failed_check_wrote_nothing(tmp_path):
    from m2s2l_edge.export.parity import ParityReport, ParityRow
    from m2s2l_edge.export.run import ExportResult, failed_record

    row = ParityRow(inputs="random", batch=1, quantity="frame_pred", max_abs=1e-6, rel=1e-6, allowed=1e-4)
    report = ParityReport(model="tiny", precision="fp32", scan="plugin", scan_backend="cpu",
                          tolerance=TOLERANCES["fp32"], rows=[row])
    record = ExportResult(tmp_path / "m.onnx", report).record()
    assert record["written"] == str(tmp_path / "m.onnx") and "int8_vs_fp32" not in record
    assert record["passed"] is True and record["rows"] == [row.as_dict()]
    with_int8 = ExportResult(tmp_path / "m.onnx", report, {"clips": 3}).record()
    assert with_int8["int8_vs_fp32"] == {"clips": 3}
    failed = dataclasses.replace(report, rows=[dataclasses.replace(row, max_abs=1.0)])
    assert failed_record(failed)["written"] is None and failed_record(failed)["passed"] is False
    with pytest.raises(ValueError, match="no parity report"):
        ExportResult(tmp_path / "m.onnx").record()
