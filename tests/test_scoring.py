"""The one scoring path: per-frame terms from predictions, what a model decides about its scores, the streaming
score, and the one smoothing the tracker and the calibration share."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def test_one_place_computes_psnr_from_predictions():
    """grep: the PSNR formula (10·log10(1 / MSE)) and the motion stream's target appear in one library module."""
    formula = re.compile(r"log10\(\s*1(\.0)?\s*/")
    motion = re.compile(r"motion_target\(")
    found = {"psnr": [], "motion": []}
    for path in sorted([*(REPO / "m2s2l_edge").rglob("*.py"), *(REPO / "export").rglob("*.py")]):
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(REPO))
        if formula.search(text):
            found["psnr"].append(rel)
        if motion.search(text):
            found["motion"].append(rel)
    assert found["psnr"] == ["m2s2l_edge/scoring/terms.py"]
    # The losses define it (training); scoring.terms is the only reader that scores with it.
    assert found["motion"] == ["m2s2l_edge/models/losses.py", "m2s2l_edge/scoring/terms.py"]


def test_clip_terms_against_hand_computed_psnrs():
    from m2s2l_edge.scoring.terms import TERMS, clip_terms

    rng = np.random.default_rng(0)
    clips = rng.uniform(-1, 1, (2, 4, 3, 16, 16)).astype(np.float32)
    target = rng.uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    frame_pred = target + 0.1
    frame_pred[1, :, 0:4, 0:4] += 0.5  # one bad 4x4 window in the second sample
    motion_pred = np.zeros_like(target)
    out = clip_terms(clips, target, frame_pred, motion_pred, patch=4)
    assert set(out.terms) == set(TERMS) and out.error_map.shape == (2, 16, 16)
    mse = (((frame_pred - target) / 2) ** 2).reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(out.terms["psnr_app"], 10 * np.log10(1 / mse), rtol=1e-5)
    motion = target - clips[:, -1]
    mse_mot = ((motion / 2) ** 2).reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(out.terms["psnr_mot"], 10 * np.log10(1 / mse_mot), rtol=1e-5)
    worst = (((frame_pred[1, :, 0:4, 0:4] - target[1, :, 0:4, 0:4]) / 2) ** 2).mean()
    assert out.terms["patch_app"][1] == pytest.approx(10 * np.log10(1 / worst), rel=1e-5)
    assert out.terms["patch_app"][0] == pytest.approx(out.terms["psnr_app"][0], rel=1e-5)  # uniform error
    np.testing.assert_allclose(out.terms["change"], np.abs(motion).reshape(2, -1).mean(axis=1), rtol=1e-5)
    with pytest.raises(ValueError, match=r"frame_pred \(2, 3, 8, 8\)"):
        clip_terms(clips, target, frame_pred[:, :, :8, :8], motion_pred, patch=4)


def test_region_terms_read_the_frame_stream_inside_the_region():
    from m2s2l_edge.scoring.terms import region_terms

    err = np.full((16, 16), 1e-3, np.float32)
    err[0:4, 12:16] = 0.05
    terms = {"psnr_app": 30.0, "psnr_mot": 28.0, "patch_app": 13.0, "patch_mot": 25.0, "change": 0.02}
    whole = region_terms(terms, err, np.ones((16, 16), bool), patch=4)
    assert whole["psnr_app"] == pytest.approx(10 * math.log10(1 / err.mean()), rel=1e-6)
    assert whole["patch_app"] == pytest.approx(10 * math.log10(1 / 0.05), rel=1e-6)
    elsewhere = np.zeros((16, 16), bool)
    elsewhere[8:16, 0:8] = True
    local = region_terms(terms, err, elsewhere, patch=4)
    assert local["psnr_app"] == local["patch_app"] == pytest.approx(30.0, abs=1e-4)
    assert (local["psnr_mot"], local["change"]) == (28.0, 0.02)  # the motion stream stays the whole frame's


# --- what a model decides about its scores -------------------------------------------------------------------------


def test_model_scoring_resolves_lambda_once_for_every_path():
    from m2s2l_edge.scoring.model import STORED, model_scoring

    exported = {"scan": "portable", "lambda": 0.6, "lambda_source": "paper (ped2)", "preset": "small",
                "normal_change": 0.0125, "weights_sha256": "ab" * 32, "precision": "fp16"}
    geometry = (4, (128, 128))
    paper = model_scoring(exported, geometry, score="paper")
    assert (paper.lam, paper.lam_source) == (0.6, STORED) and paper.precision == "float"
    stream = model_scoring(exported, geometry, score="stream")
    assert stream.lam == 1.0 and "stream score" in stream.lam_source
    assert stream.patch == 8 and stream.normal_change == 0.0125 and stream.clip_len == 4
    assert model_scoring(exported, geometry, score="paper", lam=0.3).lam == 0.3
    # A checkpoint that stored no λ: its data set decides (the one it records, unless one is given).
    checkpoint = {"scan": "torch", "lambda": 0.6, "lambda_source": "paper (ped2)", "dataset": "ped2"}
    assert model_scoring(checkpoint, geometry).lam == 0.6
    assert model_scoring(checkpoint, geometry, dataset="avenue").lam == 0.4
    with pytest.raises(ValueError, match="normalisation '\\[0, 1\\]' is not supported"):
        model_scoring({"normalization": "[0, 1]"}, geometry)
    with pytest.raises(ValueError, match="stored normal frame change is 'x'"):
        model_scoring({"normal_change": "x"}, geometry)
    with pytest.raises(ValueError, match="unknown score 'psnr'"):
        model_scoring({}, geometry, score="psnr")


# --- the streaming score -------------------------------------------------------------------------------------------


def _terms(patch_app, change):
    patch_app, change = np.asarray(patch_app, float), np.asarray(change, float)
    return {"psnr_app": patch_app + 5, "psnr_mot": patch_app + 3, "patch_app": patch_app, "patch_mot": patch_app,
            "change": change}


def test_stream_score_is_per_frame_and_does_each_step_of_patch_causally():
    from m2s2l_edge.config import get_score
    from m2s2l_edge.scoring.stream import calibrated_scores, fit_stats

    cfg = get_score("stream")
    rng = np.random.default_rng(0)
    normal = _terms(25 + rng.normal(0, 0.5, 2000), 0.02 + rng.normal(0, 0.002, 2000))
    stats = fit_stats(normal, cfg, normal_change=0.02)
    assert stats.center == pytest.approx(25, abs=0.05) and stats.change_ref == 0.02
    s = calibrated_scores(normal, stats, cfg)
    assert np.median(s) < 1.0  # typical normal near 0
    # Each frame's score depends on that frame only: scoring a series or its frames one by one agrees.
    one_by_one = [calibrated_scores({k: v[i:i + 1] for k, v in normal.items()}, stats, cfg)[0] for i in range(50)]
    np.testing.assert_allclose(one_by_one, s[:50])
    c = stats.center
    probe = _terms([c - 10 * stats.scale, c + 10 * stats.scale, c, c, c], [0.02, 0.02, 0.06, 0.0, 0.02])
    bad, easy, fast, stalled, typical = calibrated_scores(probe, stats, cfg)
    w = cfg.motion_weight
    assert bad == pytest.approx((1 - w) * 10, rel=1e-6)  # worst window 10 σ below normal
    assert easy == pytest.approx(-(1 - w) * 10, rel=1e-6)  # 10 σ better than normal: as far below 0
    assert fast == pytest.approx(w * 0.04 / stats.change_scale, rel=1e-6)  # two-sided motion term, above ...
    assert stalled >= (1 - w) * cfg.stall_score  # ... and below normal; a stall scores stall_score
    assert typical == pytest.approx(0.0, abs=1e-9)
    paper = get_score("paper")
    p_stats = fit_stats(normal, paper)
    np.testing.assert_allclose(calibrated_scores(normal, p_stats, paper),
                               (p_stats.center - (0.5 * normal["psnr_app"] + 0.5 * normal["psnr_mot"])) / p_stats.scale)


@pytest.mark.parametrize(("kind", "window"), [("mean", 5), ("median", 4), ("ema", 5), ("none", 3)])
def test_the_trackers_smoothing_is_the_calibrations(kind, window):
    """One definition: the event tracker smooths online exactly as the calibration smooths the footage it fits a
    threshold on (scoring.stream.smooth runs the tracker's Smoother over the series)."""
    from m2s2l_edge.scoring.stream import smooth
    from m2s2l_edge.watch.events import EventConfig, EventTracker
    from m2s2l_edge.watch.types import FrameScore

    x = np.random.default_rng(1).normal(0, 1, 60)
    tracker = EventTracker("cam0", EventConfig(smoothing=kind, smoothing_frames=window, on=100.0))
    online = []
    for i, v in enumerate(x):
        tracker.update(FrameScore("cam0", i, i / 10, 1e9 + i / 10, i / 10, 30.0, 30.0, 30.0, float(v), 100.0,
                                  np.zeros((4, 4), np.float32), np.zeros((8, 8, 3), np.uint8)))
        online.append(tracker.smoothed)
    np.testing.assert_allclose(online, smooth(x, kind, window), rtol=0, atol=1e-12)
    assert tracker.summary()["peak_score"] == pytest.approx(max(online))
