"""The shared CLI checks behind the one vocabulary: device spelling, model source, output checks, exit codes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from m2s2l_edge.cli import errors
from m2s2l_edge.cli.options import (
    check_device,
    check_output_dir,
    check_output_file,
    device_syntax,
    model_source,
)
from m2s2l_edge.io import atomic_write_text, remove_stale_temporaries


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:x", "CPU ", "cuda:-1", "mps", ""])
def test_bad_device_spelling_is_a_value_error(bad):
    with pytest.raises(ValueError, match="expected cpu, cuda or cuda:N"):
        device_syntax(bad)


def test_device_defaults_and_cuda_absence():
    assert check_device(None) == "cpu"
    assert device_syntax("cuda:1") == "cuda:1"
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            check_device("cuda")


def test_model_source_picks_the_backend_from_the_option(tmp_path):
    ckpt, onnx = tmp_path / "a.pt", tmp_path / "m.onnx"
    ckpt.write_bytes(b"x")
    onnx.write_bytes(b"x")
    assert model_source(weights=ckpt).kind == "torch"
    assert model_source(weights=ckpt, preset="small").preset == "small"
    assert model_source(onnx=onnx).kind == "onnxruntime"
    assert model_source(preset="tiny").path is None
    assert model_source(server="grpc://127.0.0.1:8001", model="m2s2l").kind == "triton"
    with pytest.raises(ValueError, match="--weights and --onnx"):
        model_source(weights=ckpt, onnx=onnx)
    with pytest.raises(ValueError, match="give the model to run"):
        model_source()
    with pytest.raises(ValueError, match="--preset goes with --weights"):
        model_source(onnx=onnx, preset="small")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model_source(engine=tmp_path / "missing.engine")
    with pytest.raises(ValueError, match="unknown preset"):
        model_source(preset="huge")


def test_output_checks_create_nothing_and_refuse_what_they_must(tmp_path):
    target = tmp_path / "new" / "deeper" / "x.json"
    check_output_file(target)
    assert not (tmp_path / "new").exists(), "a check must not create folders"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError):
        check_output_file(blocker / "x.json")  # a parent that is a file cannot be written, even by root
    with pytest.raises(IsADirectoryError):
        check_output_file(tmp_path)
    existing = tmp_path / "run"
    existing.mkdir()
    (existing / "results.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output_dir(existing)
    check_output_dir(existing, overwrite=True)
    check_output_dir(tmp_path / "empty-to-be")


def test_exit_codes_of_the_contract():
    assert errors.exit_code_for(ValueError("x")) == errors.EXIT_BAD_INPUT
    assert errors.exit_code_for(PermissionError(errno.EACCES, "denied")) == errors.EXIT_BAD_INPUT
    assert errors.exit_code_for(OSError(errno.EROFS, "read-only file system")) == errors.EXIT_BAD_INPUT
    assert errors.exit_code_for(RuntimeError("no backend")) == errors.EXIT_BACKEND
    assert errors.exit_code_for(ImportError("no onnxruntime")) == errors.EXIT_BACKEND
    assert errors.exit_code_for(KeyError("k")) == errors.EXIT_BAD_INPUT
    assert errors.exit_code_for(TypeError("bug")) is None  # a bug propagates, it is not dressed up as bad input


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.json.{dead_pid}.abc123.tmp"
    stale.write_text("half")
    mine = tmp_path / f".out.json.{os.getpid()}.zzz.tmp"
    mine.write_text("in progress")
    other = tmp_path / ".other.json.1.abc.tmp"
    other.write_text("not ours")
    atomic_write_text(tmp_path / "out.json", "{}")
    assert not stale.exists() and mine.exists() and other.exists()
    assert remove_stale_temporaries(tmp_path / "out.json") == []
    assert (tmp_path / "out.json").read_text() == "{}"


def test_version_and_usage_exit_codes():
    out = subprocess.run([sys.executable, "-m", "m2s2l_edge", "--version"], capture_output=True, text=True)
    from m2s2l_edge import __version__

    assert out.returncode == 0 and out.stdout.strip() == f"m2s2l-edge {__version__}"
    bad = subprocess.run([sys.executable, "-m", "m2s2l_edge", "profile", "--no-such-option"], capture_output=True,
                         text=True)
    assert bad.returncode == errors.EXIT_USAGE
    assert "No such option" in bad.stderr


def test_interrupt_is_exit_130_with_what_was_kept(tmp_path):
    code = (
        "import typer\n"
        "from m2s2l_edge.cli.errors import run_app, user_errors\n"
        "app = typer.Typer()\n"
        "@app.command()\n"
        "def slow():\n"
        f"    with user_errors(kept=lambda: 'kept {Path(tmp_path) / 'last.pt'}'):\n"
        "        raise KeyboardInterrupt\n"
        "@app.command()\n"
        "def other():\n"
        "    pass\n"
        "raise SystemExit(run_app(app, ['slow']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 130
    assert out.stderr.strip().splitlines() == [f"error: interrupted; kept {tmp_path / 'last.pt'}"]
