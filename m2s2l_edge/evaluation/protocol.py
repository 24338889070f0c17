"""The frame-level AUC protocol (docs/DESIGN.md §6), pure numpy: which frames are scored, per-video scores, AUCs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def drop_unpredicted(labels: Sequence[np.ndarray], clip_len: int) -> list[np.ndarray]:
    """Labels of the frames that get a score: frames T .. N-1 of each video (the first T have no prediction)."""
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    return [np.asarray(lab).reshape(-1)[clip_len:] for lab in labels]


@dataclass(frozen=True)
class AUCResult:
    micro: float  # roc_auc_score over all videos concatenated
    macro: float  # mean per-video AUC over the videos with both classes (nan if there are none)
    per_video: tuple[float | None, ...]  # None where a video holds a single class
    skipped: tuple[int, ...]  # indices of the videos left out of the macro AUC

    @property
    def videos_in_macro(self) -> int:
        return len(self.per_video) - len(self.skipped)


def frame_auc(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> AUCResult:
    """Micro and macro frame-level AUC of already normalised per-video ``scores`` against 0/1 ``labels``.

    Shapes: one (N_v,) array per video in each list, same lengths pairwise.
    """
    from sklearn.metrics import roc_auc_score

    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} label arrays but {len(scores)} score arrays")
    if not labels:
        raise ValueError("no videos to evaluate")
    labels = [np.asarray(lab).reshape(-1).astype(np.int64) for lab in labels]
    scores = [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]
    for i, (lab, s) in enumerate(zip(labels, scores, strict=True)):
        if lab.shape != s.shape:
            raise ValueError(f"video {i}: {lab.shape[0]} labels but {s.shape[0]} scores")
        if np.any((lab != 0) & (lab != 1)):
            raise ValueError(f"video {i}: labels must be 0/1")
    all_labels, all_scores = np.concatenate(labels), np.concatenate(scores)
    if all_labels.min(initial=1) == all_labels.max(initial=0):
        kind = "anomalous" if all_labels.size and all_labels[0] == 1 else "normal"
        raise ValueError(f"the frame-level AUC needs normal and anomalous frames, but all {all_labels.size} scored "
                         f"frames are {kind}; check the labels")
    micro = float(roc_auc_score(all_labels, all_scores))
    per_video: list[float | None] = []
    skipped: list[int] = []
    for i, (lab, s) in enumerate(zip(labels, scores, strict=True)):
        if lab.size and lab.min() != lab.max():
            per_video.append(float(roc_auc_score(lab, s)))
        else:
            per_video.append(None)
            skipped.append(i)
    valid = [a for a in per_video if a is not None]
    macro = float(np.mean(valid)) if valid else math.nan
    return AUCResult(micro, macro, tuple(per_video), tuple(skipped))
