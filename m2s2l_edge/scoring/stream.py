"""Scores for a stream: per-frame terms → a calibrated score, frame by frame, with no look at future frames.

``eval``'s scores (:mod:`.video`) normalise each video by its own minimum, maximum and median, which needs the whole
video. A camera instead freezes statistics of its own normal footage (:class:`NormalStats`, fitted by ``calibrate``
or by a camera's self-calibration) and maps each frame's terms to a calibrated score on its own
(:func:`calibrated_scores`): 0 is a typical normal frame, higher is more anomalous, the unit is the normal footage's
robust standard deviation. Smoothing over past frames (:class:`Smoother`) is applied by the event tracker and, the
same way, by the calibration when it fits a threshold.

Two scores (``ScoreConfig.method``):

* ``paper`` — the published terms: score = (median − fused) / scale of the λ-fused frame PSNR;
* ``stream`` — what ``eval``'s ``patch`` score does that can be done frame by frame: the worst window's PSNR
  (``patch_fraction``) against the normal footage's median and robust σ, a stalled frame (change below
  ``stall_ratio`` × the normal change) scored as ``stall_score`` robust σ, and a two-sided motion term
  |change − c₀| / its normal spread with weight ``motion_weight``, c₀ the training footage's median frame change
  stored in the model. ``patch``'s median floor is left out: on the validation set (build 0) flooring the calibrated
  appearance term at the normal median lowered the stream's frame AUC (0.872 against 0.891 over the four held-out
  kinds) and changed no detection (benchmarks/RESULTS.md, "Live detection").
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from m2s2l_edge.scoring.video import score_fused

MAD_TO_SIGMA = 1.4826  # 1.4826·MAD estimates σ of a normal distribution
SCALE_FLOOR_DB = 0.05  # a static scene (MAD ≈ 0) must not turn PSNR noise into huge scores
CHANGE_SCALE_FLOOR = 1e-4  # the same for the frame change ([-1, 1] units; 1e-4 ≈ 0.013 grey levels)
SMOOTHING = ("mean", "median", "ema", "none")


def robust_scale(x: np.ndarray, center: float, floor: float) -> float:
    """1.4826 · median |x − center|, at least ``floor``."""
    return max(MAD_TO_SIGMA * float(np.median(np.abs(np.asarray(x, dtype=np.float64) - center))), floor)


@dataclass(frozen=True)
class NormalStats:
    """What a camera's normal footage says about its terms (all a calibrated score needs besides its ScoreConfig).

    center / scale: median and robust σ of the score's fused PSNR (dB); change_ref: the normal frame change c₀ (the
    model's stored one, else the footage's median); change_scale: robust spread of |change − c₀| over the footage
    ([-1, 1] units).
    """

    center: float
    scale: float
    change_ref: float = 0.0
    change_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("center", "scale", "change_ref", "change_scale"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not (self.scale > 0 and self.change_scale > 0):
            raise ValueError(f"scale and change_scale must be > 0, got {self.scale}, {self.change_scale}")


def fit_stats(terms: dict[str, np.ndarray], cfg, normal_change: float | None = None) -> NormalStats:
    """The :class:`NormalStats` of normal footage's per-frame ``terms`` (each (N,)) for score ``cfg``;
    ``normal_change``: the model's stored c₀ (None: the footage's own median change)."""
    fused = score_fused(terms, cfg)
    if fused.size == 0 or not np.all(np.isfinite(fused)):
        raise ValueError("normal footage gave no finite PSNR to calibrate on")
    center = float(np.median(fused))
    change = np.asarray(terms["change"], dtype=np.float64)
    ref = float(np.median(change)) if normal_change is None else float(normal_change)
    spread = robust_scale(np.abs(change - ref), 0.0, CHANGE_SCALE_FLOOR)
    return NormalStats(center, robust_scale(fused, center, SCALE_FLOOR_DB), ref, spread)


def calibrated_scores(terms: dict[str, np.ndarray], stats: NormalStats, cfg) -> np.ndarray:
    """Calibrated score of each frame from its own terms only (each term (N,) → (N,)); see the module docstring."""
    a = (stats.center - score_fused(terms, cfg)) / stats.scale
    if cfg.method == "paper":
        return a
    change = np.asarray(terms["change"], dtype=np.float64)
    if cfg.stall_ratio > 0:
        a = np.where(change < cfg.stall_ratio * stats.change_ref, max(cfg.stall_score, 0.0), a)
    if cfg.motion_weight > 0:
        a = (1 - cfg.motion_weight) * a + cfg.motion_weight * np.abs(change - stats.change_ref) / stats.change_scale
    return a


def camera_scores(terms: dict[str, np.ndarray], stats: NormalStats, cfg, smoothing: str = "mean",
                  window: int = 5) -> np.ndarray:
    """What a camera's threshold is compared with, for one continuous stretch of footage: the
    :func:`calibrated_scores` smoothed over past frames as the event tracker smooths them (``smoothing``,
    ``window``: the calibration's). ``eval --calibration`` scores each video with it, so offline scores are the ones
    ``watch`` would show for that video."""
    return smooth(calibrated_scores(terms, stats, cfg), smoothing, window)


class Smoother:
    """Smoothing over past frames only, one value at a time: trailing ``mean`` or ``median`` over ``window`` values,
    ``ema`` (α = 2 / (window + 1)), or ``none``; the first values use what exists so far. The event tracker smooths
    with it online and the calibration offline (:func:`smooth`), so the threshold is fitted on what events see."""

    def __init__(self, kind: str = "mean", window: int = 5) -> None:
        if kind not in SMOOTHING:
            raise ValueError(f"unknown smoothing {kind!r}; valid: {', '.join(SMOOTHING)}")
        if window < 1:
            raise ValueError(f"smoothing window must be >= 1, got {window}")
        self.kind, self.window = kind, int(window)
        self._values: deque[float] = deque(maxlen=self.window)
        self._ema: float | None = None

    def __call__(self, x: float) -> float:
        x = float(x)
        if self.kind == "none" or self.window == 1:
            return x
        if self.kind == "ema":
            alpha = 2.0 / (self.window + 1.0)
            self._ema = x if self._ema is None else alpha * x + (1.0 - alpha) * self._ema
            return self._ema
        self._values.append(x)
        if self.kind == "mean":
            return math.fsum(self._values) / len(self._values)
        return float(np.median(self._values))

    def reset(self) -> None:
        self._values.clear()
        self._ema = None


def smooth(x: np.ndarray, kind: str = "mean", window: int = 5) -> np.ndarray:
    """:class:`Smoother` run over a whole series (N,) → (N,): the offline smoothing is the online one."""
    s = Smoother(kind, window)
    return np.array([s(v) for v in np.asarray(x, dtype=np.float64).reshape(-1)], dtype=np.float64)
