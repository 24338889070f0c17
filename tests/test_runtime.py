"""Runtime backends: one interface, the factory, and ONNX Runtime agreeing with PyTorch on an exported model."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from m2s2l_edge.runtime import Backend, create_backend
from m2s2l_edge.runtime.batching import check_clips, run_in_batches

needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime", "onnxruntime_extensions")),
    reason="needs onnx, onnxruntime and onnxruntime-extensions (pip install 'm2s2l-edge[onnx]')",
)


def _clips(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, 4, 3, 64, 64)).astype(np.float32)


# --- factory and helpers (no export needed) --------------------------------------------------------------------


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown backend 'tflite'; valid: torch, onnxruntime, tensorrt"):
        create_backend("tflite", "m.onnx")


def test_tensorrt_without_tensorrt_is_a_runtime_error(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0")
    from m2s2l_edge.artifacts.metadata import ExportMetadata
    from m2s2l_edge.config import get_preset

    meta = ExportMetadata(config=get_preset("tiny").to_dict(), scan="plugin", precision="fp16", batch=1, lam=0.5,
                          lambda_source="default")
    (tmp_path / "m.engine.json").write_text(meta.to_json())
    with pytest.raises(RuntimeError, match="(?i)tensorrt"):
        create_backend("tensorrt", engine)


def test_run_in_batches_pads_and_trims():
    calls = []

    def run(x):
        calls.append(x.shape[0])
        return {"y": x[:, 0, 0, 0, 0] * 2}

    clips = _clips(5)
    out = run_in_batches(run, clips, 2)
    assert calls == [2, 2, 2]
    np.testing.assert_array_equal(out["y"], clips[:, 0, 0, 0, 0] * 2)
    assert run_in_batches(run, clips, None)["y"].shape == (5,)


def test_check_clips_names_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(B, 4, 3, 64, 64\)"):
        check_clips(np.zeros((2, 4, 3, 32, 32), np.float32), ("batch", 4, 3, 64, 64))
    with pytest.raises(ValueError, match="floating point"):
        check_clips(np.zeros((2, 4, 3, 64, 64), np.uint8), ("batch", 4, 3, 64, 64))
    assert check_clips(np.zeros((1, 4, 3, 64, 64)), ("batch", 4, 3, 64, 64)).dtype == np.float32


# --- PyTorch backend ----------------------------------------------------------------------------------------------


def test_torch_backend_from_preset_and_checkpoint(tmp_path):
    from m2s2l_edge.artifacts.checkpoint import save_checkpoint

    backend = create_backend("torch", preset="tiny", seed=0, threads=1)
    assert isinstance(backend, Backend)
    assert backend.inputs[0].shape == ("batch", 4, 3, 64, 64)
    out = backend.run(_clips(2))
    assert out["frame_pred"].shape == out["motion_pred"].shape == (2, 3, 64, 64)
    assert backend.metadata["preset"] == "tiny" and backend.metadata["lambda"] == 0.5

    ckpt = tmp_path / "tiny.ckpt"
    save_checkpoint(ckpt, backend.model, extra={"dataset": "shanghaitech"})
    restored = create_backend("torch", ckpt)
    assert restored.metadata["lambda"] == 0.5 and restored.metadata["dataset"] == "shanghaitech"
    np.testing.assert_allclose(restored.run(_clips(2))["frame_pred"], out["frame_pred"], atol=1e-6)
    with pytest.raises(ValueError, match="holds preset 'tiny', not 'small'"):
        create_backend("torch", ckpt, preset="small")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        create_backend("torch", preset="tiny", precision="fp16")


# --- ONNX Runtime backend --------------------------------------------------------------------------------------------


@needs_onnx
def test_onnxruntime_and_torch_backends_agree(exports):
    ort_backend = create_backend("onnxruntime", exports["portable"], threads=2)
    torch_backend = create_backend("torch", preset="tiny", seed=0)
    assert isinstance(ort_backend, Backend)
    assert ort_backend.inputs[0].shape == torch_backend.inputs[0].shape == ("batch", 4, 3, 64, 64)
    assert [o.name for o in ort_backend.outputs] == ["frame_pred", "motion_pred"]
    for batch in (1, 3):
        clips = _clips(batch, seed=batch)
        got, want = ort_backend.run(clips), torch_backend.run(clips)
        for name in ("frame_pred", "motion_pred"):
            assert got[name].shape == (batch, 3, 64, 64) and got[name].dtype == np.float32
            err = np.abs(got[name] - want[name]).max() / np.abs(want[name]).max()
            assert err <= 1e-4, (name, batch, err)


@needs_onnx
def test_onnxruntime_backend_reads_the_metadata(exports):
    backend = create_backend("onnxruntime", exports["portable"])
    meta = backend.metadata
    assert (meta["preset"], meta["clip_len"], meta["image_size"]) == ("tiny", 4, 64)
    assert (meta["scan"], meta["precision"], meta["batch"], meta["normalization"]) == ("portable", "fp32", "dynamic",
                                                                                       "[-1, 1]")
    assert meta["lambda"] == 0.6 and meta["providers"] == ["CPUExecutionProvider"]


@needs_onnx
def test_plugin_flavour_runs_by_default_on_our_cpu_kernel(exports):
    """The default export (plugin flavour) runs in ONNX Runtime with no extra option; the backend says which scan
    ran, and refuses only when told not to use a custom op."""
    from m2s2l_edge.ops import ort_library

    with pytest.raises(RuntimeError, match="plugin-flavour export.*--scan portable"):
        create_backend("onnxruntime", exports["plugin"], scan_op="none")
    plugin = create_backend("onnxruntime", exports["plugin"], threads=1)
    portable = create_backend("onnxruntime", exports["portable"], threads=1)
    expected = "native ONNX Runtime op" if ort_library.is_available() else "Python op"
    assert expected in plugin.metadata["selective_scan"]
    assert "standard ONNX ops" in portable.metadata["selective_scan"]
    clips = _clips(2)
    np.testing.assert_allclose(plugin.run(clips)["motion_pred"], portable.run(clips)["motion_pred"], rtol=1e-4,
                               atol=1e-6)


@needs_onnx
def test_onnxruntime_bad_inputs(tmp_path, exports):
    with pytest.raises(FileNotFoundError):
        create_backend("onnxruntime", tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ValueError):
        create_backend("onnxruntime", junk)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            create_backend("onnxruntime", exports["portable"], device="cuda")
    with pytest.raises(ValueError, match="unknown device"):
        create_backend("onnxruntime", exports["portable"], device="tpu")
    backend = create_backend("onnxruntime", exports["portable"])
    with pytest.raises(ValueError, match=r"\(B, 4, 3, 64, 64\)"):
        backend.run(np.zeros((1, 4, 3, 32, 32), np.float32))


def test_torch_backend_runs_an_optimized_copy_and_keeps_the_model_saveable(tmp_path):
    from m2s2l_edge.artifacts.checkpoint import save_checkpoint
    from m2s2l_edge.runtime.torch_backend import TorchBackend

    optimized = TorchBackend(preset="tiny", seed=0, threads=1)
    plain = TorchBackend(preset="tiny", seed=0, threads=1, optimize=False)
    assert optimized.metadata["inference_rewrites"] == {"folded_batchnorm": 29, "merged_ms_convs": 3}
    assert plain.metadata["inference_rewrites"] == {}
    assert any(type(m).__name__ == "BatchNorm2d" for m in optimized.model.modules())  # the checkpointable model
    save_checkpoint(tmp_path / "from_backend.pt", optimized.model)
    clips = _clips(2)
    a, b = optimized.run(clips), plain.run(clips)
    for name in ("frame_pred", "motion_pred"):
        np.testing.assert_allclose(a[name], b[name], rtol=0, atol=1e-5 * np.abs(b[name]).max())
