"""Model-free peers scored through the same protocol as the model (per-video min-max, frame-level AUC).

* frame differencing: the mean absolute difference between a frame and the one before it (more change = more
  anomalous); it sees fast motion and new objects, and ranks a stalled camera as the most normal footage;
* a two-sided motion statistic: ``|e_t − median(e_train)| / MAD(e_train)`` of that same motion energy ``e_t``, with
  the median and the median absolute deviation taken over the normal training frames, so footage that moves much
  more *or much less* than normal scores high (a frozen camera has e_t = 0).

Both read frames through :func:`m2s2l_edge.data.preprocess_frame` at the model's resolution, in grayscale, and
score frames T .. N-1 of each video (the frames the model predicts), so their arrays line up with ``eval``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BASELINES = ("frame_difference", "motion_statistic")


def motion_energy(video, image_size: int) -> np.ndarray:
    """(N,) mean |x_t − x_{t−1}| of the grayscale frames in [-1, 1] units; element 0 (no predecessor) is NaN."""
    from m2s2l_edge.data import preprocess_frame

    energy, prev = [], None
    for frame in video.iter_frames():
        gray = preprocess_frame(frame, image_size).mean(axis=0)  # (H, W)
        energy.append(np.nan if prev is None else float(np.abs(gray - prev).mean()))
        prev = gray
    return np.asarray(energy, dtype=np.float64)


def training_motion_stats(train_videos: Sequence, image_size: int) -> tuple[float, float]:
    """(median, MAD) of the motion energy over every frame of the normal training videos."""
    e = np.concatenate([motion_energy(v, image_size)[1:] for v in train_videos])
    median = float(np.median(e))
    mad = float(np.median(np.abs(e - median)))
    if mad <= 0:
        raise ValueError("the training videos' motion energy has no spread (MAD 0): is the footage static?")
    return median, mad


def baseline_scores(kind: str, test_videos: Sequence, clip_len: int, image_size: int,
                    train_videos: Sequence = ()) -> list[np.ndarray]:
    """Raw (not yet normalised) scores of frames T .. N-1 of each test video, higher = more anomalous."""
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline {kind!r}; valid: {', '.join(BASELINES)}")
    stats = training_motion_stats(train_videos, image_size) if kind == "motion_statistic" else None
    out = []
    for v in test_videos:
        e = motion_energy(v, image_size)[clip_len:]
        out.append(e if stats is None else np.abs(e - stats[0]) / stats[1])
    return out
