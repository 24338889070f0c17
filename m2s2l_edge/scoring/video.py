"""Anomaly scoring: PSNR of both streams, the λ-weighted score, per-video min-max normalisation (docs/DESIGN.md §6).

Two scores (``ScoreConfig.method`` in :mod:`m2s2l_edge.config`):

* ``paper`` — the published one: PSNR of the whole predicted frame and motion, fused with λ, min-max per video;
* ``patch`` — our addition: the same with the PSNR of the *worst* patch instead of the frame mean (a person-sized
  anomaly moves a frame-mean error by a few percent and a patch error many times over), and frames where the camera
  stalled (the frame repeats the one before it) flagged as anomalous and kept out of the min-max, where their
  near-perfect prediction would otherwise squeeze every other frame of the video.

All functions are pure and work on numpy arrays or torch tensors of images in model units ([-1, 1] frames).
"""

from __future__ import annotations

import numpy as np


def stalled(change: np.ndarray, ratio: float) -> np.ndarray:
    """Frames that (nearly) repeat the frame before them: change below ``ratio`` × the video's median change.

    A live camera's sensor noise alone moves every frame; a stalled feed repeats a frame exactly (0) or up to
    re-encoding noise. Relative to the video's own median, so the rule needs no calibration per camera.
    """
    change = np.asarray(change, dtype=np.float64)
    if change.size == 0:
        return np.zeros(0, dtype=bool)
    return change < ratio * float(np.median(change))


def fused_psnr(psnr_app: np.ndarray, psnr_mot: np.ndarray, lam: float) -> np.ndarray:
    """λ·PSNR_app + (1−λ)·PSNR_mot (higher = more normal)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam}")
    return lam * np.asarray(psnr_app, dtype=np.float64) + (1 - lam) * np.asarray(psnr_mot, dtype=np.float64)


def min_max(x: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1]; a constant sequence maps to zeros."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    return np.zeros_like(x) if hi - lo <= 0 else (x - lo) / (hi - lo)


def quantile_floor(score: np.ndarray, q: float) -> np.ndarray:
    """Scores in [0, 1] → scores below their ``q``-quantile set to 0, the rest mapped linearly onto [0, 1] (the
    maximum stays where it is). ``q`` = 0 returns the input; a video with no spread above the quantile maps to 0."""
    score = np.asarray(score, dtype=np.float64)
    if q <= 0 or score.size == 0:
        return score
    lo, hi = float(np.quantile(score, q)), float(score.max())
    return np.zeros_like(score) if hi - lo <= 0 else np.clip((score - lo) / (hi - lo), 0.0, 1.0)


def score_fused(terms: dict[str, np.ndarray], cfg) -> np.ndarray:
    """The λ-fused PSNR (dB, higher = more normal) a score is made of: of whole frames for ``paper``, of the worst
    windows for our scores (``patch``, ``stream``). ``terms``: see :data:`m2s2l_edge.scoring.terms.TERMS`."""
    if cfg.method == "paper":
        return fused_psnr(terms["psnr_app"], terms["psnr_mot"], cfg.lam)
    return fused_psnr(terms["patch_app"], terms["patch_mot"], cfg.lam)


def video_scores(terms: dict[str, np.ndarray], cfg, normal_change: float | None = None) -> np.ndarray:
    """Per-video anomaly score in [0, 1] (higher = more anomalous) from the per-frame terms of one video.

    ``terms``: ``psnr_app``, ``psnr_mot`` (frame PSNRs), ``patch_app``, ``patch_mot`` (worst-patch PSNRs) and
    ``change`` (:func:`frame_change` of each predicted frame against the one before), each (N - T,);
    ``cfg``: a :class:`m2s2l_edge.config.ScoreConfig`. Order: fuse with λ, set stalled frames aside, smooth the
    rest over time (Gaussian, ``cfg.smooth_sigma`` frames), min-max normalise it, floor it at its
    ``cfg.floor_quantile`` (:func:`quantile_floor`), stalled frames score 1; with ``cfg.motion_weight`` w > 0 the
    result is (1 − w)·that + w·min-max(|change − ``normal_change``|), min-max normalised (``normal_change`` None:
    the video's own median change).
    """
    if len(terms["psnr_app"]) == 0:
        return np.zeros(0)
    fused = score_fused(terms, cfg)
    still = stalled(terms["change"], cfg.stall_ratio) if cfg.stall_ratio > 0 else np.zeros(len(fused), dtype=bool)
    out = np.ones(len(fused), dtype=np.float64)
    live = fused[~still]
    if live.size:
        if cfg.smooth_sigma > 0:
            from scipy.ndimage import gaussian_filter1d

            live = gaussian_filter1d(live, cfg.smooth_sigma, mode="nearest")
        out[~still] = quantile_floor(1.0 - min_max(live), cfg.floor_quantile)
    if cfg.motion_weight > 0:
        change = np.asarray(terms["change"], dtype=np.float64)
        ref = float(np.median(change)) if normal_change is None else float(normal_change)
        out = min_max((1 - cfg.motion_weight) * out + cfg.motion_weight * min_max(np.abs(change - ref)))
    return out
