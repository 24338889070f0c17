"""CLI start-up stays light, and bad input to `profile` is one clear line with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from m2s2l_edge.cli.app import app

HEAVY = ("onnx", "onnxruntime", "tensorrt", "torch", "cv2", "matplotlib")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_package_pulls_nothing_heavy():
    loaded = _modules_after("import m2s2l_edge")
    assert not [m for m in HEAVY if m in loaded]


def test_help_pulls_neither_onnx_nor_tensorrt_nor_torch():
    code = (
        "from m2s2l_edge.cli.app import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'profile' in r.output\n"
    )
    loaded = _modules_after(code)
    assert not [m for m in HEAVY if m in loaded]


def test_console_script_help_runs():
    out = subprocess.run([sys.executable, "-m", "m2s2l_edge", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "profile" in out.stdout


def test_profile_unknown_preset_is_one_line():
    r = CliRunner().invoke(app, ["profile", "--preset", "huge"])
    assert r.exit_code == 1
    assert r.output.strip() == "error: unknown preset 'huge'; valid: paper, small, tiny"


def test_profile_bad_resolution_is_one_line():
    r = CliRunner().invoke(app, ["profile", "--preset", "paper", "--resolution", "250"])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "not divisible by the coarsest patch size 32" in lines[0]


def test_profile_json_to_stdout_and_file(tmp_path):
    r = CliRunner().invoke(app, ["profile", "--preset", "tiny", "--json", "-"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)  # '--json -': stdout holds the JSON only, the table goes to stderr
    assert "paper figures" in r.stderr
    assert data["total"]["params"] == sum(g["params"] for g in data["groups"].values())
    assert data["total"]["true_flops"] == 2 * data["total"]["macs"] + data["total"]["scan_flops"]
    out = tmp_path / "p.json"
    r = CliRunner().invoke(app, ["profile", "--preset", "tiny", "--fps", "--iterations", "2", "--warmup", "1",
                                 "--json", str(out)])
    assert r.exit_code == 0, r.output
    saved = json.loads(out.read_text())
    assert saved["fps"]["rows"][0]["mode"] == "fp32 eager" and saved["fps"]["rows"][0]["latency"]["fps"] > 0
    assert "paper figures" in r.output


def test_profile_cuda_without_gpu_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the message on machines without a CUDA device; this one has one")
    r = CliRunner().invoke(app, ["profile", "--preset", "tiny", "--fps", "--device", "cuda"])
    assert r.exit_code == 3
    assert r.output.strip().startswith("error: --device cuda: no CUDA device")
