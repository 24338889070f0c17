"""A real peer trained and evaluated on the same footage as M²S²L: `train --model mnad|ffp`, then `eval`."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from m2s2l_edge.artifacts.checkpoint import load_model, read_checkpoint
from m2s2l_edge.cli.app import app
from m2s2l_edge.models.baselines.predictor import PeerPredictor

# 32² frames and a clip every 8th frame (8 clips, 2 steps per epoch) keep the peers cheap on a CPU.
TRAIN = ["--dataset", "synthetic", "--preset", "tiny", "--set", "image_size=32", "--stride", "8", "--batch", "4",
         "--lr", "1e-3"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from m2s2l_edge.data import generate_dataset

    root = tmp_path_factory.mktemp("data")
    generate_dataset(root, n_train=2, n_test=2, frames=30, size=64, seed=0)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("arch, term, epochs", [("mnad", "compact", 2), ("ffp", "gradient", 1)])
def test_train_and_eval_a_peer(root, tmp_path, arch, term, epochs, caplog):
    run = tmp_path / "run"
    with caplog.at_level("INFO", logger="m2s2l_edge.training.trainer"):
        result = invoke("train", "--data", root, *TRAIN, "--model", arch, "--epochs", epochs, "--out", run)
    assert result.exit_code == 0, result.stdout + result.stderr
    # the start line names the peer, not M²S²L's preset and switches
    assert any(r.getMessage().startswith(f"training {arch} (peer predictor) on ") for r in caplog.records)
    state = read_checkpoint(run / "last.pt")
    assert state["arch"] == arch and state["config"]["name"] == "tiny"
    history = json.loads((run / "history.json").read_text())
    assert term in history[0]["terms"] and "sep" not in history[0]["terms"]  # the peer's objective, not M²S²L's
    if epochs > 1:
        assert history[1]["loss"] < history[0]["loss"]

    model, _ = load_model(run / "last.pt")
    assert isinstance(model, PeerPredictor) and model.arch == arch
    clip = torch.rand(1, 4, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        frame, motion = model.eval().predict(clip)
    assert torch.allclose(motion, frame - clip[:, -1])

    out = tmp_path / "eval"
    result = invoke("eval", "--data", root, "--dataset", "synthetic", "--weights", run / "last.pt", "--out", out,
                    "--no-plots")
    assert result.exit_code == 0, result.stdout + result.stderr
    data = json.loads((out / "results.json").read_text())
    assert 0.0 <= data["micro_auc"] <= 1.0 and data["videos"] == 2


def test_resume_refuses_another_architecture(root, tmp_path):
    run = tmp_path / "run"
    assert invoke("train", "--data", root, *TRAIN, "--model", "ffp", "--epochs", 1, "--out", run).exit_code == 0
    result = invoke("train", "--data", root, *TRAIN, "--model", "mnad", "--epochs", 2, "--out", run, "--resume")
    assert result.exit_code == 1 and "arch" in result.stderr and "error: " in result.stderr


def test_unknown_architecture_is_refused(root, tmp_path):
    result = invoke("train", "--data", root, *TRAIN, "--model", "memae", "--epochs", 1, "--out", tmp_path / "r")
    assert result.exit_code == 1 and "cannot be trained here; valid: m2s2l, mnad, ffp" in result.stderr


def test_foreground_weight_is_refused_for_a_peer(root, tmp_path):
    """The peers train with their own objective: --foreground-weight (M²S²L's frame loss) would silently do nothing."""
    result = invoke("train", "--data", root, *TRAIN, "--model", "mnad", "--foreground-weight", 4, "--epochs", 1,
                    "--out", tmp_path / "r")
    assert result.exit_code == 1 and result.stderr.startswith("error:") and "own objective" in result.stderr
    assert not (tmp_path / "r" / "last.pt").exists()
