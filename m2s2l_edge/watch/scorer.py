"""Scoring clips of many cameras in one backend call, with the terms ``eval`` computes.

What the model takes and how its outputs become scores is resolved once from the backend
(:func:`m2s2l_edge.scoring.model.model_scoring`: T and the resolution from its input spec, λ, normalisation and the
normal frame change from its metadata), so a watch never hard-codes a preset. Frames are preprocessed by
:func:`m2s2l_edge.data.preprocess_frame` and the terms computed by :func:`m2s2l_edge.scoring.terms.clip_terms`,
the functions ``eval`` uses: for the same frames and backend the terms are the same (a test checks it frame by frame).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from m2s2l_edge.scoring.model import ModelScoring, model_scoring
from m2s2l_edge.scoring.terms import TERMS, clip_terms
from m2s2l_edge.watch.channel import Clip

logger = logging.getLogger(__name__)


def resolve_scoring(backend, score: str) -> ModelScoring:
    """The backend's :class:`ModelScoring` for ``score`` (stream or paper)."""
    from m2s2l_edge.runtime.base import backend_geometry

    return model_scoring(getattr(backend, "metadata", None) or {}, backend_geometry(backend), score=score)


@dataclass(frozen=True)
class RawScore:
    """The model's raw verdict on one clip's target frame: its terms (:data:`TERMS`, floats) and the frame
    prediction's error map (H, W) float32 at the model resolution."""

    clip: Clip
    terms: dict[str, float]
    error_map: np.ndarray


class ClipScorer:
    """Runs batches of clips (any cameras) through ``backend`` and computes their per-frame terms and error maps."""

    def __init__(self, backend, scoring: ModelScoring) -> None:
        self.backend = backend
        self.scoring = scoring
        self.backend_seconds = 0.0  # accumulated time inside backend.run
        self.calls = 0
        self.last_call_s = 0.0

    def score(self, clips: list[Clip]) -> list[RawScore]:
        """One backend call for all ``clips``; raises RuntimeError when the backend fails (with its message)."""
        if not clips:
            return []
        T = self.scoring.clip_len
        batch = np.stack([c.clip for c in clips])  # (B, T+1, 3, H, W)
        clip, target = np.ascontiguousarray(batch[:, :T], dtype=np.float32), batch[:, T]  # (B, T, ...), (B, 3, H, W)
        tic = time.perf_counter()
        try:
            out = self.backend.run(clip)
        except Exception as e:  # noqa: BLE001 - each runtime raises its own types; all mean "the backend failed"
            raise RuntimeError(f"backend {getattr(self.backend, 'name', '?')} failed on a batch of {len(clips)} "
                               f"clips: {type(e).__name__}: {e}") from None
        self.last_call_s = time.perf_counter() - tic
        self.backend_seconds += self.last_call_s
        self.calls += 1
        try:
            terms = clip_terms(clip, target, out["frame_pred"], out["motion_pred"], self.scoring.patch)
        except ValueError as e:
            raise RuntimeError(str(e)) from None
        return [RawScore(c, {k: float(terms.terms[k][i]) for k in TERMS}, terms.error_map[i])
                for i, c in enumerate(clips)]
