"""`m2s2l-edge bench`: the trtexec-like summary, the JSON record, and bad input as one line."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from m2s2l_edge.cli.app import app

needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime", "onnxruntime_extensions")),
    reason="needs onnx, onnxruntime and onnxruntime-extensions (pip install 'm2s2l-edge[onnx]')",
)


def _check_summary(output: str) -> None:
    for fragment in ("=== Performance summary ===", "Throughput:", "mean = ", "median = ", "percentile(90%)",
                     "percentile(99%)", "Machine:"):
        assert fragment in output, output


@needs_onnx
def test_bench_onnx_prints_summary_and_writes_json(tmp_path, exports):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(app, ["bench", "--onnx", str(exports["portable"]), "--batch", "2", "--warmup", "1",
                                 "--iterations", "3", "--threads", "1", "--json", str(out)])
    assert r.exit_code == 0, r.output
    _check_summary(r.output)
    data = json.loads(out.read_text())
    assert data["backend"] == "onnxruntime" and data["threads"] == 1
    assert data["input"]["shape"] == [2, 4, 3, 64, 64]
    assert data["latency"]["iterations"] == 3 and data["latency"]["fps"] > 0
    assert {"mean_ms", "median_ms", "p90_ms", "p99_ms"} <= set(data["latency"])
    assert data["model"]["preset"] == "tiny" and data["model"]["scan"] == "portable"
    assert "cpu_count" in data["machine"] and "onnxruntime" in data["machine"]
    assert "load_average" in data


def test_bench_torch_to_stdout_json():
    r = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--warmup", "0", "--iterations", "2", "--json", "-"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)  # stdout holds the JSON only; the summary went to stderr
    _check_summary(r.stderr)
    assert data["backend"] == "torch" and data["input"]["shape"] == [1, 4, 3, 64, 64]


def test_bench_torch_summary():
    r = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--warmup", "0", "--iterations", "2"])
    assert r.exit_code == 0, r.output
    _check_summary(r.output)


def _one_line_error(result, code: int, fragment: str) -> None:
    lines = result.output.strip().splitlines()
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output


def test_bench_needs_exactly_one_source(tmp_path):
    _one_line_error(CliRunner().invoke(app, ["bench"]), 1, "give the model to run")
    (tmp_path / "a.pt").write_bytes(b"x")
    (tmp_path / "m.onnx").write_bytes(b"x")
    r = CliRunner().invoke(app, ["bench", "--weights", str(tmp_path / "a.pt"), "--onnx", str(tmp_path / "m.onnx")])
    _one_line_error(r, 1, "--weights and --onnx were both given")
    r = CliRunner().invoke(app, ["bench", "--onnx", str(tmp_path / "m.onnx"), "--preset", "tiny"])
    _one_line_error(r, 1, "an exported model carries its own preset")


def test_bench_bad_values(tmp_path):
    _one_line_error(CliRunner().invoke(app, ["bench", "--onnx", str(tmp_path / "none.onnx")]), 1, "does not exist")
    r = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--iterations", "0"])
    assert r.exit_code == 2 and "--iterations" in r.output  # Click's range check: a usage error
    _one_line_error(CliRunner().invoke(app, ["bench", "--preset", "huge"]), 1, "unknown preset 'huge'")
    _one_line_error(CliRunner().invoke(app, ["bench", "--preset", "tiny", "--device", "gpu"]), 1,
                    "--device 'gpu': expected cpu, cuda or cuda:N")


@needs_onnx
def test_bench_plugin_flavour_runs_on_our_cpu_kernel_and_says_so(exports, tmp_path):
    """The default export flavour needs no extra option on a CPU; the summary names the scan that ran."""
    from m2s2l_edge.ops import ort_library
    from m2s2l_edge.runtime.ort_session import NATIVE_SCAN_PATH

    out = tmp_path / "b.json"
    r = CliRunner().invoke(app, ["bench", "--onnx", str(exports["plugin"]), "--warmup", "0", "--iterations", "1",
                                 "--threads", "1", "--json", str(out)])
    assert r.exit_code == 0, r.output
    _check_summary(r.output)
    expected = NATIVE_SCAN_PATH if ort_library.is_available() else "SelectiveScan: our CPU kernel via onnxruntime-ext"
    assert expected in r.output
    data = json.loads(out.read_text())
    assert data["model"]["scan"] == "plugin" and data["selective_scan"].startswith(expected)


@needs_onnx
@pytest.mark.slow
def test_bench_all_times_every_format_in_one_table(tmp_path, write_avi):
    """`bench --all`: a row per format; the CPU ones run, are compared with PyTorch FP32 and score labelled footage
    through eval's path; TensorRT and Triton rows say why they cannot run here."""
    import importlib

    import numpy as np

    from m2s2l_edge.formats import FORMATS

    video = write_avi(tmp_path / "test.avi", 12, h=64, w=64)
    labels = np.zeros(12, dtype=np.int64)
    labels[8:] = 1
    np.save(tmp_path / "labels.npy", labels)
    md = tmp_path / "table.md"
    r = CliRunner().invoke(app, ["bench", "--all", "--preset", "tiny", "--threads", "1", "--warmup", "0",
                                 "--iterations", "2", "--data", str(video), "--labels", str(tmp_path / "labels.npy"),
                                 "--markdown", str(md), "--json", "-"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    rows = {row["key"]: row for row in result["rows"]}
    assert list(rows) == [key for key, *_ in FORMATS]
    for key in ("pytorch", "pytorch-inference", "ort-portable", "ort-plugin", "ort-int8"):
        row = rows[key]
        assert row["status"] == "ok", row
        assert row["latency"]["iterations"] == 2 and row["latency"]["batch"] == 1 and row["ratio_to_pytorch"] > 0
        assert 0.0 <= row["auc"] <= 1.0
    assert rows["pytorch"]["ratio_to_pytorch"] == 1.0 and rows["pytorch"]["parity"]["max_abs"] == 0.0
    for key in ("pytorch-inference", "ort-portable", "ort-plugin"):
        assert rows[key]["parity"]["rel"] < 1e-4, rows[key]
    assert 0 < rows["ort-int8"]["parity"]["rel"] < 0.5 and rows["ort-int8"]["precision"] == "int8"
    # A lone test video is no normal footage: INT8 was calibrated on rendered footage, and says so.
    assert "rendered_normal_footage" in rows["ort-int8"]["note"]
    if importlib.util.find_spec("tensorrt") is None:
        assert rows["tensorrt-fp16"]["status"] == "unavailable" and "TensorRT" in rows["tensorrt-fp16"]["reason"]
    assert rows["triton"]["status"] == "unavailable" and "--server" in rows["triton"]["reason"]
    assert result["threads"] == 1 and result["auc"]["videos"] == 1
    assert "load_average" in result and result["machine"]["cpu_count"] >= 1
    text = md.read_text()
    assert text.count("\n| ") == len(FORMATS) and "| ort-int8 | int8 |" in text
    assert "ort-plugin" in r.stderr and "vs PyTorch" in r.stderr


def test_bench_all_bad_input_is_one_line(tmp_path):
    for args, message in (
        (["--onnx", str(tmp_path / "m.onnx")], "give --weights CHECKPOINT or --preset NAME"),
        (["--preset", "tiny", "--data", str(tmp_path / "none")], "--data"),
        (["--preset", "tiny", "--server", "grpc://127.0.0.1:1"], "--server and --model go together"),
        (["--preset", "tiny", "--fp16"], "--fp16 does not apply"),
    ):
        r = CliRunner().invoke(app, ["bench", "--all", *args])
        assert r.exit_code != 0 and "error:" in r.stderr and message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.output
    r = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--markdown", str(tmp_path / "t.md")])
    assert r.exit_code == 1 and "--markdown go(es) with --all" in r.stderr
