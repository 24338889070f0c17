"""The native ONNX Runtime SelectiveScan op (m2s2l_edge/ops/csrc/scan_ort_op.cpp, ``m2s2l_edge.ops.ort_library``).

Checked the way a C++ or Triton host uses it: a plain ``onnxruntime.InferenceSession`` in a fresh process with only
the library registered (no onnxruntime-extensions, no Python op, no m2s2l_edge import), against the float64
reference ``selective_scan_ref``, on every scan shape the presets' models run (read off the models themselves, so a
changed architecture is covered without editing this file), in FP32 and FP16 I/O; and whole exported models against
the float64 PyTorch model.

The library needs ONNX Runtime's C++ headers (``bash plugins/fetch_ort_headers.sh``); where they are missing the
tests skip with that reason, except in CI (``CI`` set), where .ci/run fetches them and a missing library fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from test_export import _single_scan_model  # noqa: E402

from m2s2l_edge.ops import ort_library, selective_scan_ref  # noqa: E402
from m2s2l_edge.ops.cpu_kernel import KernelBuildError  # noqa: E402


@pytest.fixture(scope="module")
def op_library() -> Path:
    if not ort_library.is_available():
        reason = ort_library.unavailable_reason()
        if os.environ.get("CI"):
            pytest.fail(f"CI must build the native ONNX Runtime op: {reason}")
        pytest.skip(reason)
    return ort_library.library()


# A plain ONNX Runtime host: nothing of ours is imported, only the library registered. Reads a JSON list of jobs
# {"model", "feeds" (an .npz), "out" (an .npz), "threads"} and writes each job's outputs.
_HOST = textwrap.dedent("""
    import json, sys
    import numpy as np
    import onnxruntime as ort
    library, jobs = sys.argv[1], json.loads(sys.argv[2])
    for job in jobs:
        options = ort.SessionOptions()
        options.register_custom_ops_library(library)
        options.intra_op_num_threads = job["threads"]
        session = ort.InferenceSession(job["model"], options, providers=["CPUExecutionProvider"])
        feeds = dict(np.load(job["feeds"]))
        names = [o.name for o in session.get_outputs()]
        np.savez(job["out"], **dict(zip(names, session.run(names, feeds))))
    leaked = sorted(m for m in sys.modules if m.startswith(("onnxruntime_extensions", "m2s2l_edge", "torch")))
    assert not leaked, leaked
""")


def run_in_plain_host(library: Path, jobs: list[dict]) -> list[dict[str, np.ndarray]]:
    """Run each job's model in a fresh Python with only onnxruntime and the op library; returns the outputs."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _HOST, str(library), json.dumps(jobs)], capture_output=True,
                          text=True, timeout=600, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [dict(np.load(job["out"])) for job in jobs]


def model_scan_shapes() -> list[tuple[int, int, int, int, int, bool]]:
    """(batch, KD, K, N, L, gated) of every selective scan the presets' models call, at each preset's own input size
    at 64 px and with the custom-footage recipe's model, read by running the models on meta tensors with the scan as the
    ``torch.ops.m2s2l.selective_scan`` op."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from m2s2l_edge.config import get_preset, preset_names, training_recipe
    from m2s2l_edge.models import create_model

    shapes: set[tuple[int, int, int, int, int, bool]] = set()

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func._schema.name == "m2s2l::selective_scan":
                bound = dict(zip([a.name for a in func._schema.arguments], args, strict=False)) | (kwargs or {})
                (b, kd, length), (_, k, n, _) = bound["u"].shape, bound["B"].shape
                shapes.add((b, kd, k, n, length, bound.get("z") is not None))
            return func(*args, **(kwargs or {}))

    for preset in preset_names():
        variants = [{"image_size": size} for size in sorted({get_preset(preset).image_size, 64})]
        if training_recipe("custom", preset).model:
            variants.append(dict(training_recipe("custom", preset).model))
        for overrides in variants:
            model = create_model(preset, scan_backend="op", **overrides).eval().to("meta")
            size = model.cfg.image_size
            clip = torch.zeros(1, model.cfg.clip_len, 3, size, size, device="meta")
            with torch.no_grad(), Record():
                model(clip)
    return sorted(shapes)


def _feeds(kd: int, k: int, n: int, length: int, gated: bool, dtype, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {"u": rng.normal(size=(batch, kd, length)), "delta": rng.normal(size=(batch, kd, length)) - 1.0,
             "B": rng.normal(size=(batch, k, n, length)), "C": rng.normal(size=(batch, k, n, length))}
    if gated:
        feeds["z"] = rng.normal(size=(batch, kd, length))
    return {name: v.astype(dtype) for name, v in feeds.items()}


def _reference(feeds: dict, params: dict) -> np.ndarray:
    t = {x: torch.from_numpy(np.asarray(v, dtype=np.float64)) for x, v in {**feeds, **params}.items()}
    return selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t.get("z"), t["delta_bias"],
                              True).numpy()


@pytest.mark.slow
def test_every_model_scan_shape_matches_the_float64_reference(op_library, tmp_path):
    """FP32 and FP16 I/O on each shape the models use, batch 1 and 2, in a plain ONNX Runtime with only our library;
    1 and 2 intra-op threads give the same bits (channels are independent)."""
    shapes = model_scan_shapes()
    assert len(shapes) >= 12 and any(g for *_, g in shapes) and any(not g for *_, g in shapes)
    jobs, cases = [], []
    for i, (_, kd, k, n, length, gated) in enumerate(shapes):
        for dtype in (np.float32, np.float16):
            model, params = _single_scan_model(kd, k, n, length, gated, dtype)
            path = tmp_path / f"scan_{i}_{np.dtype(dtype).name}.onnx"
            onnx.save(model, path)
            feeds = _feeds(kd, k, n, length, gated, dtype, batch=2, seed=i)
            np.savez(tmp_path / f"feeds_{i}_{np.dtype(dtype).name}.npz", **feeds)
            for threads in (1, 2):
                jobs.append({"model": str(path), "feeds": str(tmp_path / f"feeds_{i}_{np.dtype(dtype).name}.npz"),
                             "out": str(tmp_path / f"out_{i}_{np.dtype(dtype).name}_{threads}.npz"),
                             "threads": threads})
            cases.append((shapes[i], dtype, feeds, params))
    outputs = run_in_plain_host(op_library, jobs)
    for j, (shape, dtype, feeds, params) in enumerate(cases):
        one, two = outputs[2 * j]["y"], outputs[2 * j + 1]["y"]
        want = _reference(feeds, params)
        assert one.dtype == dtype and one.shape == want.shape, shape
        np.testing.assert_array_equal(one, two)
        # FP32: the kernel's own rounding over L steps; FP16: y is rounded to float16 once (inputs already are).
        tol = 1e-3 if dtype == np.float16 else 2e-5
        err = np.abs(one.astype(np.float64) - want).max() / np.abs(want).max()
        assert err < tol, (shape, np.dtype(dtype).name, err)


def test_native_op_runs_a_plugin_export_in_a_plain_session(op_library, exports, fp16_exports, tmp_path):
    """The default export (plugin flavour), FP32 and FP16, in plain ONNX Runtime with only the library: the same
    outputs as the float64 PyTorch model with the pure-PyTorch scan, within the export's parity tolerance."""
    from m2s2l_edge.export.onnx_export import load_source_model
    from m2s2l_edge.export.parity import TOLERANCES, reference_model

    model, _ = load_source_model(preset="tiny", seed=0)
    reference = reference_model(model)
    clips = np.random.default_rng(3).uniform(-1, 1, (3, 4, 3, 64, 64)).astype(np.float32)
    np.savez(tmp_path / "clips.npz", clip=clips)
    jobs = [{"model": str(p), "feeds": str(tmp_path / "clips.npz"), "out": str(tmp_path / f"{name}.npz"),
             "threads": 2} for name, p in (("fp32", exports["plugin"]), ("fp16", fp16_exports["plugin"]))]
    got = run_in_plain_host(op_library, jobs)
    with torch.inference_mode():
        frame, motion = (t.numpy() for t in reference.predict(torch.from_numpy(clips).to(torch.float64)))
    for outputs, precision in zip(got, ("fp32", "fp16"), strict=True):
        tol = TOLERANCES[precision]
        for name, want in (("frame_pred", frame), ("motion_pred", motion)):
            err = np.abs(outputs[name].astype(np.float64) - want).max()
            assert err <= tol.allowed(np.abs(want).max()), (precision, name, err)


def test_bad_shapes_are_one_clear_onnx_runtime_error(op_library):
    import onnxruntime as ort

    model, _ = _single_scan_model(8, 4, 3, 5, False, np.float32)
    for value in (*model.graph.input, *model.graph.output):  # shapes unknown to the graph: only the op can check
        value.type.tensor_type.ClearField("shape")
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(op_library))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = _feeds(8, 4, 3, 5, False, np.float32, batch=1, seed=0)
    feeds["B"] = feeds["B"][:, :2]  # two groups where C has four
    with pytest.raises(Exception, match=r"inconsistent shapes: u \(1, 8, 5\).*B \(1, 2, 3, 5\)"):
        session.run(None, feeds)


def test_backend_picks_the_native_op_and_says_so(op_library, exports):
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.runtime.ort_session import NATIVE_SCAN_PATH

    native = create_backend("onnxruntime", exports["plugin"], threads=1)
    python = create_backend("onnxruntime", exports["plugin"], threads=1, scan_op="python")
    assert native.metadata["selective_scan"] == NATIVE_SCAN_PATH
    assert "onnxruntime-extensions (Python op)" in python.metadata["selective_scan"]
    clips = np.random.default_rng(1).uniform(-1, 1, (2, 4, 3, 64, 64)).astype(np.float32)
    a, b = native.run(clips), python.run(clips)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5 * np.abs(b[name]).max())


def test_missing_headers_fall_back_loudly_or_refuse(exports, tmp_path, monkeypatch, caplog):
    """Without ONNX Runtime's headers: "native" refuses with the fix, "auto" runs the Python op with a warning that
    says why (never silently), and the summaries name the op that ran."""
    from m2s2l_edge.runtime import create_backend, ort_session

    monkeypatch.setenv("M2S2L_ORT_INCLUDE", str(tmp_path))
    with pytest.raises(KernelBuildError, match="holds no onnxruntime_c_api.h"):
        ort_library.find_headers()
    ort_library._library.cache_clear()
    ort_session._warn_python_fallback.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="native ONNX Runtime SelectiveScan op is unavailable"):
            create_backend("onnxruntime", exports["plugin"], threads=1, scan_op="native")
        with caplog.at_level("WARNING"):
            backend = create_backend("onnxruntime", exports["plugin"], threads=1)
        assert "Python op" in backend.metadata["selective_scan"]
        assert any("running the slower Python op" in r.getMessage() for r in caplog.records)
    finally:
        ort_library._library.cache_clear()
        ort_session._warn_python_fallback.cache_clear()


def test_unknown_scan_op_is_a_value_error(exports):
    from m2s2l_edge.runtime import create_backend

    with pytest.raises(ValueError, match="unknown scan op 'fast'; valid: auto, native, python, none"):
        create_backend("onnxruntime", exports["plugin"], scan_op="fast")
    with pytest.raises(RuntimeError, match="plugin-flavour export.*--scan portable"):
        create_backend("onnxruntime", exports["plugin"], scan_op="none")
