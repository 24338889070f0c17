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
    from m2s2l_edge.ops import cpu_kernel

    out = tmp_path / "b.json"
    r = CliRunner().invoke(app, ["bench", "--onnx", str(exports["plugin"]), "--warmup", "0", "--iterations", "1",
                                 "--threads", "1", "--json", str(out)])
    assert r.exit_code == 0, r.output
    _check_summary(r.output)
    expected = ("SelectiveScan: our CPU kernel via onnxruntime-extensions" if cpu_kernel.is_available()
                else "SelectiveScan: the pure-PyTorch scan via onnxruntime-extensions")
    assert expected in r.output
    data = json.loads(out.read_text())
    assert data["model"]["scan"] == "plugin" and data["selective_scan"].startswith(expected)
