"""The frame-level AUC protocol (docs/DESIGN.md §6) against hand-computed values, the scoring loop and the outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from m2s2l_edge.config import ScoreConfig
from m2s2l_edge.evaluation.outputs import write_outputs
from m2s2l_edge.evaluation.protocol import drop_unpredicted, frame_auc
from m2s2l_edge.evaluation.run import evaluate
from m2s2l_edge.runtime.base import TensorSpec
from m2s2l_edge.scoring.video import video_scores


def paper_scores(psnr_app, psnr_mot, lam: float) -> list[np.ndarray]:
    """eval's published score of each video (the per-video path eval takes), from whole-frame PSNRs only."""
    return [video_scores({"psnr_app": a, "psnr_mot": m, "patch_app": a, "patch_mot": m, "change": np.ones(len(a))},
                         ScoreConfig("paper", lam)) for a, m in zip(psnr_app, psnr_mot, strict=True)]


def test_micro_auc_hand_computed():
    # Positives 0.35, 0.8 against negatives 0.1, 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3 of 4 pairs.
    result = frame_auc([np.array([0, 0, 1, 1])], [np.array([0.1, 0.4, 0.35, 0.8])])
    assert result.micro == pytest.approx(0.75)
    assert result.per_video == (pytest.approx(0.75),)
    assert result.macro == pytest.approx(0.75)


def test_ties_count_half():
    # One positive tied with one of two negatives: (1 + 0.5) / 2.
    assert frame_auc([np.array([0, 0, 1])], [np.array([0.2, 0.5, 0.5])]).micro == pytest.approx(0.75)


def test_per_video_normalisation_changes_the_result():
    """Video A is sharp (PSNR ~40 dB), video B blurry (~30 dB): each video's one anomaly is its lowest PSNR.

    Per video (the protocol): scores [0, 0, 1] in both videos -> AUC 1.
    Globally normalised instead: 1 - (p - 28) / 12 gives A [0, 0, 1/6] and B [5/6, 5/6, 1]; the positives 1/6 and 1
    against the negatives 0, 0, 5/6, 5/6 win 2 + 4 of 8 pairs -> AUC 0.75.
    """
    labels = [np.array([0, 0, 1]), np.array([0, 0, 1])]
    psnr = [np.array([40.0, 40.0, 38.0]), np.array([30.0, 30.0, 28.0])]
    per_video = paper_scores(psnr, psnr, lam=0.5)
    np.testing.assert_allclose(per_video[0], [0, 0, 1])
    np.testing.assert_allclose(per_video[1], [0, 0, 1])
    assert frame_auc(labels, per_video).micro == pytest.approx(1.0)

    everything = np.concatenate(psnr)
    global_scores = 1 - (everything - everything.min()) / (everything.max() - everything.min())
    np.testing.assert_allclose(global_scores, [0, 0, 1 / 6, 5 / 6, 5 / 6, 1])
    assert frame_auc([np.concatenate(labels)], [global_scores]).micro == pytest.approx(0.75)


def test_lambda_weights_appearance_against_motion():
    # λ = 0.75: fused = 0.75·app + 0.25·mot = [31, 32, 27.5] -> minmax [3.5/4.5, 1, 0] -> anomaly [2/9, 0, 1].
    scores = paper_scores([np.array([32.0, 32.0, 30.0])], [np.array([28.0, 32.0, 20.0])], lam=0.75)
    np.testing.assert_allclose(scores[0], [2 / 9, 0, 1])
    # λ = 1 ignores motion: appearance alone ties the first two frames.
    np.testing.assert_allclose(paper_scores([np.array([32.0, 32.0, 30.0])], [np.array([28.0, 32.0, 20.0])],
                                                lam=1.0)[0], [0, 0, 1])
    with pytest.raises(ValueError, match="lambda"):
        paper_scores([np.array([1.0])], [np.array([1.0])], lam=1.5)


def test_macro_auc_skips_single_class_videos():
    labels = [np.array([0, 1, 0, 1]), np.array([0, 0, 0]), np.array([1, 0])]
    scores = [np.array([0.0, 1.0, 0.5, 0.4]), np.array([0.1, 0.2, 0.3]), np.array([1.0, 0.0])]
    result = frame_auc(labels, scores)
    # Video 0: positives 1.0, 0.4 vs negatives 0.0, 0.5 -> 3 of 4; video 2: 1 of 1; video 1 has no anomaly.
    assert result.per_video == (pytest.approx(0.75), None, pytest.approx(1.0))
    assert result.skipped == (1,)
    assert result.videos_in_macro == 2
    assert result.macro == pytest.approx((0.75 + 1.0) / 2)


def test_auc_needs_both_classes_overall():
    with pytest.raises(ValueError, match="normal and anomalous"):
        frame_auc([np.zeros(3), np.zeros(2)], [np.arange(3.0), np.arange(2.0)])
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        frame_auc([np.array([0, 1])], [np.zeros(3)])


def test_first_t_frames_are_dropped():
    labels = [np.arange(10) % 2, np.array([1, 1, 1, 1, 0, 1])]
    kept = drop_unpredicted(labels, clip_len=4)
    np.testing.assert_array_equal(kept[0], [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(kept[1], [0, 1])
    assert len(drop_unpredicted([np.zeros(3)], 4)[0]) == 0


# --- the scoring loop over a backend ------------------------------------------------------------------------------


class CopyLastFrame:
    """A backend that predicts 'nothing moves': the last input frame and a zero frame difference."""

    name = "copy-last"

    def __init__(self, clip_len: int = 4, size: int = 24) -> None:
        self.clip_len, self.size = clip_len, size
        self.calls = 0

    @property
    def inputs(self):
        return (TensorSpec("clips", ("batch", self.clip_len, 3, self.size, self.size), "float32"),)

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        assert clips.dtype == np.float32 and clips.shape[1:] == (self.clip_len, 3, self.size, self.size)
        return {"frame_pred": clips[:, -1].copy(), "motion_pred": np.zeros_like(clips[:, -1])}


@pytest.fixture
def two_videos(tmp_path, write_frames):
    from m2s2l_edge.data import FrameFolderSource

    # conftest frames change level by 37 (mod 200) per frame, so copying the last frame has a frame-dependent error.
    write_frames(tmp_path / "a", 12, h=24, w=24)
    write_frames(tmp_path / "b", 9, h=24, w=24)
    return [FrameFolderSource(tmp_path / "a"), FrameFolderSource(tmp_path / "b")]


def test_evaluate_scores_every_predicted_frame_once(two_videos):
    from m2s2l_edge.data import preprocess_frame
    from m2s2l_edge.evaluation.run import frame_terms

    backend = CopyLastFrame()
    terms = frame_terms(backend, two_videos[0], 4, (24, 24), batch_size=3)
    targets, app, mot = terms["targets"], terms["psnr_app"], terms["psnr_mot"]
    np.testing.assert_array_equal(targets, np.arange(4, 12))
    assert backend.calls == 3  # ceil(8 / 3)
    frames = [preprocess_frame(two_videos[0].read(i), 24) for i in range(12)]  # (3, H, W) in [-1, 1]
    expected = [10 * math.log10(1 / np.mean(((frames[t] - frames[t - 1]) / 2) ** 2)) for t in range(4, 12)]
    np.testing.assert_allclose(app, expected, rtol=1e-4)
    # A zero motion prediction against x_t - x_{t-1} has exactly the error of copying the last frame.
    np.testing.assert_allclose(mot, app, rtol=1e-4)

    # Label the frame this backend predicts worst, plus the first T frames (no prediction: must be dropped).
    worst = 4 + int(np.argmin(app))
    lab_a = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], np.uint8)
    lab_a[worst] = 1
    lab_b = np.zeros(9, np.uint8)
    result = evaluate(backend, two_videos, [lab_a, lab_b], lam=0.5, batch_size=3)
    a, b = result.videos
    np.testing.assert_array_equal(b.targets, np.arange(4, 9))
    fused = 0.5 * np.asarray(app) + 0.5 * np.asarray(mot)
    np.testing.assert_allclose(a.scores, 1 - (fused - fused.min()) / (fused.max() - fused.min()), rtol=1e-6)
    assert a.scores.argmax() == worst - 4 and a.scores.max() == 1.0
    assert result.auc.per_video[0] == pytest.approx(1.0)  # only if labels and scores line up at frame T
    assert result.auc.skipped == (1,)  # video b is all normal
    assert result.auc.micro == pytest.approx(frame_auc([lab_a[4:], lab_b[4:]], [a.scores, b.scores]).micro)
    assert result.predicted_frames == 8 + 5


def test_evaluate_checks_labels_before_running(two_videos):
    backend = CopyLastFrame()
    with pytest.raises(ValueError, match="label/frame count mismatch for video 'a'"):
        evaluate(backend, two_videos, [np.zeros(11), np.zeros(9)], lam=0.5)
    assert backend.calls == 0


def test_unreadable_frame_is_an_error(tmp_path, write_frames):
    from m2s2l_edge.data import FrameFolderSource

    write_frames(tmp_path / "v", 8, h=24, w=24)
    (tmp_path / "v" / "6.jpg").write_bytes(b"not a jpeg")
    video = FrameFolderSource(tmp_path / "v")
    with pytest.raises(ValueError, match="unreadable"):
        evaluate(CopyLastFrame(), [video], [np.r_[np.zeros(7), 1]], lam=0.5)


def test_outputs_scores_plots_and_results(tmp_path, two_videos):
    labels = [np.r_[np.zeros(8), np.ones(4)].astype(np.uint8), np.zeros(9, np.uint8)]
    result = evaluate(CopyLastFrame(), two_videos, labels, lam=0.5)
    paths = write_outputs(result, tmp_path / "out", meta={"dataset": "custom"})
    saved = np.load(tmp_path / "out" / "scores" / "a.npy")
    assert saved.shape == (8,)
    np.testing.assert_allclose(saved, result.videos[0].scores, rtol=1e-6)
    assert np.load(tmp_path / "out" / "scores" / "b.npy").shape == (5,)
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["micro_auc"] == pytest.approx(result.auc.micro)
    assert data["videos_skipped_in_macro"] == ["b"] and data["videos_in_macro"] == 1
    assert data["dataset"] == "custom" and data["per_video"][0]["scores_file"] == "scores/a.npy"
    for key in ("roc", "overview"):
        assert open(paths[key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out" / "plots").iterdir()) == ["a.png", "b.png"]
    assert not list((tmp_path / "out").rglob("*.tmp")), "no temporary files left behind"


def test_intervals_for_shading():
    from m2s2l_edge.report.plots import intervals

    assert intervals(np.array([0, 1, 1, 0, 0, 1])) == [(1, 3), (5, 6)]
    assert intervals(np.zeros(4)) == []


def test_torch_backend_from_a_checkpoint_matches_the_model(tmp_path):
    import torch

    from m2s2l_edge.artifacts.checkpoint import save_checkpoint
    from m2s2l_edge.models import create_model
    from m2s2l_edge.runtime import open_model
    from m2s2l_edge.runtime.base import backend_geometry

    model = create_model("tiny", seed=0)
    save_checkpoint(tmp_path / "tiny.pt", model)
    backend = open_model("torch", str(tmp_path / "tiny.pt"), expected_preset="tiny")
    assert backend_geometry(backend) == (4, (64, 64))
    clips = torch.rand(2, 4, 3, 64, 64) * 2 - 1
    out = backend.run(clips.numpy())
    with torch.inference_mode():
        frame, motion = model.eval().predict(clips)
    np.testing.assert_allclose(out["frame_pred"], frame.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["motion_pred"], motion.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        open_model("tflite", "x")


# --- λ: one resolver -------------------------------------------------------------------------------------------


def test_resolve_lambda_order_and_case():
    from m2s2l_edge.scoring.model import STORED, resolve_lambda

    # explicit > stored in the model > the paper's per data set (any letter case) > 0.5
    assert resolve_lambda("ped2", 0.3, stored=0.7) == (0.3, "explicit")
    assert resolve_lambda("ped2", None, stored=0.7) == (0.7, STORED)
    assert resolve_lambda("Avenue") == (0.4, "paper (avenue)")
    assert resolve_lambda("PED2") == (0.6, "paper (ped2)")
    assert resolve_lambda("ShanghaiTech")[0] == 0.5 and resolve_lambda("shanghaitech")[1] == "paper (shanghaitech)"
    assert resolve_lambda("synthetic")[1].startswith("default") and resolve_lambda(None)[0] == 0.5
    with pytest.raises(ValueError, match=r"lambda must lie in \[0, 1\], got 1.5"):
        resolve_lambda(None, 1.5)
    with pytest.raises(ValueError, match="stored lambda"):
        resolve_lambda("ped2", None, stored=-0.1)


def test_model_lambda_counts_only_a_stored_value(tmp_path):
    from m2s2l_edge.artifacts.checkpoint import save_checkpoint
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.scoring.model import STORED, model_lambda, resolve_lambda

    fresh = create_backend("torch", preset="tiny", seed=0, threads=1)
    # A checkpoint trained on Ped2 derives 0.6 for itself, but stores nothing: evaluating on Avenue must give 0.4.
    save_checkpoint(tmp_path / "ped2.pt", fresh.model, extra={"dataset": "ped2"})
    derived = create_backend("torch", tmp_path / "ped2.pt")
    assert derived.metadata["lambda"] == 0.6 and model_lambda(derived.metadata) is None
    assert resolve_lambda("avenue", None, stored=model_lambda(derived.metadata)) == (0.4, "paper (avenue)")
    save_checkpoint(tmp_path / "stored.pt", fresh.model, extra={"dataset": "ped2", "lambda": 0.3})
    stored = create_backend("torch", tmp_path / "stored.pt")
    assert (stored.metadata["lambda"], stored.metadata["lambda_source"]) == (0.3, STORED)
    assert resolve_lambda("avenue", None, stored=model_lambda(stored.metadata)) == (0.3, STORED)
    # An exported model's metadata always carries the λ fixed at export.
    assert model_lambda({"scan": "portable", "lambda": 0.6, "lambda_source": "paper (ped2)"}) == 0.6
