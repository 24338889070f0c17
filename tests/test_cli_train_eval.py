"""`m2s2l-edge train` and `m2s2l-edge eval` end to end on tiny synthetic data, and how they refuse bad input.

Every refusal must be one readable line on stderr with a non-zero exit, and must leave earlier outputs untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from m2s2l_edge.cli.app import app

TRAIN = ["--dataset", "synthetic", "--preset", "tiny", "--stride", "4", "--batch", "4", "--lr", "2e-3"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments, code=1):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from m2s2l_edge.data import generate_dataset

    root = tmp_path_factory.mktemp("data")
    generate_dataset(root, n_train=2, n_test=2, frames=30, size=64, seed=0)
    return root


@pytest.fixture(scope="module")
def run(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = invoke("train", "--data", root, *TRAIN, "--epochs", 1, "--out", out)
    assert result.exit_code == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def evaluated(root, run, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--weights", run / "last.pt",
                    "--preset", "tiny", "--out", out)
    assert result.exit_code == 0, result.stdout + result.stderr
    return out, result


def test_train_writes_checkpoint_history_and_plot(run):
    from m2s2l_edge.artifacts.checkpoint import read_checkpoint

    state = read_checkpoint(run / "last.pt")
    assert state["epoch"] == 1 and state["config"]["name"] == "tiny"
    assert state["extra"]["dataset"] == "synthetic"
    assert json.loads((run / "history.json").read_text())[0]["epoch"] == 1
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_reports_auc_and_writes_outputs(evaluated):
    out, result = evaluated
    data = json.loads((out / "results.json").read_text())
    assert 0.0 <= data["micro_auc"] <= 1.0 and data["lambda"] == 0.5  # DEFAULT_LAMBDA for synthetic
    assert data["videos"] == 2 and data["clip_len"] == 4
    assert "micro AUC" in result.stdout and "macro AUC" in result.stdout and "01" in result.stdout
    for row in data["per_video"]:
        scores = np.load(out / row["scores_file"])
        assert scores.shape == (30 - 4,) and row["scored_frames"] == 26
        assert scores.min() == 0.0 and scores.max() == 1.0  # min-max normalised per video
    assert (out / "roc.png").is_file() and (out / "scores_overview.png").is_file()
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["01.png", "02.png"]


def test_lambda_override(root, run, tmp_path):
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--weights", run / "last.pt", "--lambda", 1.0,
                    "--out", tmp_path, "--no-plots")
    assert result.exit_code == 0, result.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["lambda"] == 1.0 and not (tmp_path / "roc.png").exists()


# --- refusals ------------------------------------------------------------------------------------------------------


@pytest.fixture
def earlier(evaluated, tmp_path):
    """A copy of a finished evaluation folder, to check that a failed eval leaves it untouched."""
    out = tmp_path / "earlier"
    shutil.copytree(evaluated[0], out)
    return out, (out / "results.json").read_bytes(), (out / "scores" / "01.npy").read_bytes()


def assert_untouched(earlier) -> None:
    out, results, scores = earlier
    assert (out / "results.json").read_bytes() == results
    assert (out / "scores" / "01.npy").read_bytes() == scores
    assert not list(out.rglob("*.tmp"))


def test_truncated_checkpoint_is_refused(root, run, earlier, tmp_path):
    data = (run / "last.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--weights", tmp_path / "cut.pt",
                    "--out", earlier[0], "--overwrite")
    assert_one_line_error(result, "cut.pt", "corrupt")
    assert_untouched(earlier)


def test_checkpoint_of_another_preset_is_refused(root, run, earlier):
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--weights", run / "last.pt",
                    "--preset", "small", "--out", earlier[0], "--overwrite")
    assert_one_line_error(result, "holds preset 'tiny', not 'small'")
    assert_untouched(earlier)


def test_checkpoint_of_the_earlier_design_is_refused(root, run, earlier, tmp_path):
    """A checkpoint written before the decoders read the encoders' maps (its config lists the pixel CNN's skip
    widths, its weights hold that CNN): one line naming the file and what to do, from every command that loads it."""
    import torch

    state = torch.load(run / "last.pt", weights_only=True)
    state["config"].update(skip_channels=(8, 8, 8, 4), drop_fine_skips=0, skip_dropout=0.0)
    state["model"]["skips.stages.0.0.weight"] = torch.zeros(4, 12, 3, 3)
    torch.save(state, tmp_path / "earlier.pt")
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--weights", tmp_path / "earlier.pt",
                    "--out", earlier[0], "--overwrite")
    assert_one_line_error(result, "earlier.pt", "earlier M²S²L design", "retrain")
    assert_untouched(earlier)
    result = invoke("export", "--weights", tmp_path / "earlier.pt", "--out", tmp_path / "m.onnx")
    assert_one_line_error(result, "earlier.pt", "earlier M²S²L design")
    assert not (tmp_path / "m.onnx").exists()


def test_missing_data_folder(run, earlier, tmp_path):
    result = invoke("eval", "--data", tmp_path / "nowhere", "--dataset", "synthetic", "--weights", run / "last.pt",
                    "--out", earlier[0], "--overwrite")
    assert_one_line_error(result, "not found", "nowhere")
    assert_untouched(earlier)
    result = invoke("train", "--data", tmp_path / "nowhere", *TRAIN, "--out", tmp_path / "t")
    assert_one_line_error(result, "not found")
    assert not (tmp_path / "t").exists()


@pytest.fixture
def broken_root(root, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    return copy


def test_unreadable_frame(broken_root, run, earlier):
    (broken_root / "synthetic" / "testing" / "frames" / "02" / "0020.jpg").write_bytes(b"\xff\xd8 truncated")
    result = invoke("eval", "--data", broken_root, "--dataset", "synthetic", "--weights", run / "last.pt",
                    "--out", earlier[0], "--overwrite")
    assert_one_line_error(result, "'02'", "0020.jpg", "unreadable")
    assert_untouched(earlier)


def test_empty_video(broken_root, run, earlier):
    for f in (broken_root / "synthetic" / "testing" / "frames" / "01").iterdir():
        f.unlink()
    result = invoke("eval", "--data", broken_root, "--dataset", "synthetic", "--weights", run / "last.pt",
                    "--out", earlier[0], "--overwrite")
    assert_one_line_error(result, "'01' is empty")
    assert_untouched(earlier)


def test_labels_of_the_wrong_length(broken_root, run, earlier):
    labels = broken_root / "synthetic" / "frame_labels_synthetic.npy"
    np.save(labels, np.load(labels)[:, :-3])
    result = invoke("eval", "--data", broken_root, "--dataset", "synthetic", "--weights", run / "last.pt",
                    "--out", earlier[0], "--overwrite")
    assert_one_line_error(result, "label/frame count mismatch")
    assert_untouched(earlier)


def test_eval_uses_the_lambda_stored_in_an_exported_model(root, exports, tmp_path):
    """The export stored λ = 0.6 (it was exported for Ped2); scoring synthetic footage with it, without --lambda,
    uses 0.6, not the 0.5 a synthetic data set would get; an explicit --lambda still wins."""
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--onnx",
                    exports["portable"], "--out", tmp_path / "stored", "--no-plots")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "stored" / "results.json").read_text())
    assert (data["lambda"], data["lambda_source"]) == (0.6, "stored in the model")
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--onnx",
                    exports["portable"], "--lambda", 0.2, "--out", tmp_path / "explicit", "--no-plots")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "explicit" / "results.json").read_text())
    assert (data["lambda"], data["lambda_source"]) == (0.2, "explicit")


def test_usage_errors(root, run, tmp_path):
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--out", tmp_path / "e")
    assert_one_line_error(result, "give the model to run: --weights CHECKPOINT, --onnx MODEL.onnx, --engine")
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--weights", run / "last.pt", "--lambda", 2,
                    "--out", tmp_path / "e")
    assert_one_line_error(result, "--lambda must lie in [0, 1]")
    result = invoke("train", "--data", root, *TRAIN, "--set", "colour=red", "--out", tmp_path / "t")
    assert_one_line_error(result, "--set 'colour=red'")
    result = invoke("train", "--data", root, *TRAIN, "--ablation", "M9", "--out", tmp_path / "t")
    assert_one_line_error(result, "unknown ablation 'M9'")
    result = invoke("train", "--data", root, *TRAIN, "--out", tmp_path / "t", "--resume")
    assert_one_line_error(result, "nothing to resume")


def test_train_refuses_to_overwrite_a_run(root, run):
    before = (run / "last.pt").read_bytes()
    result = invoke("train", "--data", root, *TRAIN, "--epochs", 1, "--out", run)
    assert_one_line_error(result, "already exists")
    assert (run / "last.pt").read_bytes() == before


# --- a real kill -9 -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch(root, tmp_path):
    """Kill the training process with SIGKILL during epoch 2; --resume restarts at epoch 2 from epoch 1's state and
    ends in the same state as an uninterrupted run."""
    from m2s2l_edge.artifacts.checkpoint import read_checkpoint

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["train", "--data", str(root), *TRAIN, "--epochs", "2"]
    cmd = [sys.executable, "-c", "from m2s2l_edge.cli.app import main; main()"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*cmd, *args, "--out", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        # history.json is written right after last.pt; its appearance means epoch 1 is on disk.
        while not (killed / "history.json").exists():
            assert proc.poll() is None, f"training exited early: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "epoch 1 did not finish in 5 minutes"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    saved = read_checkpoint(killed / "last.pt")
    if saved["epoch"] != 1:
        pytest.skip(f"the run finished epoch {saved['epoch']} before the kill landed (machine too slow to race)")
    assert proc.returncode == -signal.SIGKILL

    # The resumed and the clean run are processes like the killed one: in this process an earlier test may have
    # changed PyTorch's thread count (process-wide), and a run with other threads sums in another order.
    resumed = subprocess.run([*cmd, *args, "--out", str(killed), "--resume"], env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 1 of 2" in resumed.stdout
    whole = subprocess.run([*cmd, *args, "--out", str(clean)], env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr

    a, b = read_checkpoint(killed / "last.pt"), read_checkpoint(clean / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    assert_close_tree(a["model"], b["model"], "model")
    assert_close_tree(a["optimizer"], b["optimizer"], "optimizer")
    assert_close_tree(a["scheduler"], b["scheduler"], "scheduler")


def assert_close_tree(a, b, where: str) -> None:
    import torch

    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=lambda m: f"{where}: {m}")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_close_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_demo_pipeline_on_a_tiny_setting(tmp_path):
    """The demo's orchestration (generate → train → evaluate → plots → summary) with the tiny preset."""
    import io

    from rich.console import Console

    from m2s2l_edge.cli.demo_cmd import DemoSettings, _print_summary, run_demo

    settings = DemoSettings(n_train=1, n_test=3, frames=30, render_size=64, preset="tiny", overrides={}, epochs=1,
                            batch_size=4, stride=4, eval_batch=8)
    console = Console(file=io.StringIO(), width=120)
    summary = run_demo(settings, tmp_path / "demo", seed=1, device="cpu", console=console)
    _print_summary(summary, console)
    text = console.file.getvalue()
    assert "frame-level AUC" in text and "scores_overview.png" in text
    assert 0.0 <= summary["micro_auc"] <= 1.0 and summary["train_steps"] == 1  # 7 clips, batch 4
    assert tuple(summary["settings"]["kinds"]) == ("fast_object", "foreign_object", "running")
    for key in ("results", "roc", "overview", "checkpoint", "loss_plot", "report"):
        assert os.path.isfile(summary["files"][key]), key
    assert json.loads(open(summary["files"]["results"]).read())["videos"] == 3
    # The demo's report.html: the summary points at it and it needs nothing beside it (a browser renders it in
    # tests/test_ui.py, eval's kind of page).
    assert summary["files"]["report"] in " ".join(text.split())
    html = open(summary["files"]["report"], encoding="utf-8").read()
    assert "<script src=" not in html and "<link" not in html and html.count("data:image/jpeg;base64,") >= 3 * 3


def test_open_backend_refuses_a_checkpoint_of_another_preset(run):
    from m2s2l_edge.runtime import open_model

    backend = open_model("torch", str(run / "last.pt"), expected_preset="tiny")
    assert backend.metadata["preset"] == "tiny"
    with pytest.raises(ValueError, match="holds preset 'tiny', not 'paper'"):
        open_model("torch", str(run / "last.pt"), expected_preset="paper")


@pytest.mark.slow  # the ONNX export of even the tiny model takes tens of seconds on 2 cores
def test_onnxruntime_backend_gives_the_torch_scores(root, run, evaluated, tmp_path):
    """eval --onnx on the exported checkpoint reproduces the torch backend's per-frame scores."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    model = tmp_path / "tiny.onnx"
    result = invoke("export", "--weights", run / "last.pt", "--scan", "portable", "--dynamic", "--no-check",
                    "--out", model)
    assert result.exit_code == 0, result.stdout + result.stderr
    out = tmp_path / "ort"
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--onnx", model, "--out", out, "--no-plots")
    assert result.exit_code == 0, result.stdout + result.stderr
    for name in ("01", "02"):
        np.testing.assert_allclose(np.load(out / "scores" / f"{name}.npy"),
                                   np.load(evaluated[0] / "scores" / f"{name}.npy"), atol=2e-3)
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--onnx", model, "--preset", "small",
                    "--out", tmp_path / "other")
    assert_one_line_error(result, "--preset goes with --weights")
