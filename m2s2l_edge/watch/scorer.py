"""Scoring clips of many cameras in one backend call, with the same PSNRs as ``eval``.

The model input is described by the backend itself (``evaluate.backend_geometry`` reads T and the resolution from
its input spec; ``metadata`` gives λ and the normalisation), so a watch never hard-codes a preset. Frames are
preprocessed by :func:`m2s2l_edge.data.preprocess_frame` and PSNRs computed by :func:`m2s2l_edge.scoring.terms.psnr`
and :func:`m2s2l_edge.models.losses.motion_target`, exactly the functions ``eval`` uses: for the same frames and backend
the raw PSNRs agree to float rounding (a test checks it frame by frame).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from m2s2l_edge.watch.capture import Clip

logger = logging.getLogger(__name__)

SUPPORTED_NORMALIZATION = "[-1, 1]"


@dataclass(frozen=True)
class ModelInput:
    """What the model takes, read from the backend: T past frames at (H, W), normalised to [-1, 1]; λ of the score."""

    clip_len: int
    image_size: tuple[int, int]
    lam: float
    preset: str | None
    normalization: str = SUPPORTED_NORMALIZATION


def model_input(backend) -> ModelInput:
    """The :class:`ModelInput` of ``backend``. Raises ValueError for a normalisation this pipeline does not apply."""
    from m2s2l_edge.runtime.base import backend_geometry

    clip_len, size = backend_geometry(backend)
    meta = getattr(backend, "metadata", None) or {}
    norm = meta.get("normalization", SUPPORTED_NORMALIZATION)
    if norm != SUPPORTED_NORMALIZATION:
        raise ValueError(f"model normalisation {norm!r} is not supported (watch feeds RGB frames scaled to "
                         f"{SUPPORTED_NORMALIZATION})")
    lam = meta.get("lambda", meta.get("lam"))
    if lam is None:
        from m2s2l_edge.config import DEFAULT_LAMBDA

        lam = DEFAULT_LAMBDA
    return ModelInput(clip_len, size, float(lam), meta.get("preset"), norm)


@dataclass(frozen=True)
class RawScore:
    """The model's raw verdict on one clip's target frame. error_map: (H, W) float32 at the model resolution."""

    clip: Clip
    psnr_app: float
    psnr_mot: float
    fused: float
    error_map: np.ndarray


class ClipScorer:
    """Runs batches of clips (any cameras) through ``backend`` and computes per-frame PSNRs and error maps."""

    def __init__(self, backend, model: ModelInput | None = None) -> None:
        self.backend = backend
        self.model = model or model_input(backend)
        self.backend_seconds = 0.0  # accumulated time inside backend.run
        self.calls = 0
        self.last_call_s = 0.0

    def score(self, clips: list[Clip]) -> list[RawScore]:
        """One backend call for all ``clips``; raises RuntimeError when the backend fails (with its message)."""
        import torch

        from m2s2l_edge.models.losses import motion_target
        from m2s2l_edge.scoring.terms import psnr
        from m2s2l_edge.scoring.video import fused_psnr

        if not clips:
            return []
        T = self.model.clip_len
        batch = torch.from_numpy(np.stack([c.clip for c in clips]))  # (B, T+1, 3, H, W)
        clip, target = batch[:, :T], batch[:, T]  # (B, T, 3, H, W), (B, 3, H, W)
        tic = time.perf_counter()
        try:
            out = self.backend.run(np.ascontiguousarray(clip.numpy(), dtype=np.float32))
        except Exception as e:  # noqa: BLE001 - each runtime raises its own types; all mean "the backend failed"
            raise RuntimeError(f"backend {getattr(self.backend, 'name', '?')} failed on a batch of {len(clips)} "
                               f"clips: {type(e).__name__}: {e}") from None
        self.last_call_s = time.perf_counter() - tic
        self.backend_seconds += self.last_call_s
        self.calls += 1
        frame_pred = torch.as_tensor(np.asarray(out["frame_pred"]), dtype=torch.float32)  # (B, 3, H, W)
        motion_pred = torch.as_tensor(np.asarray(out["motion_pred"]), dtype=torch.float32)  # (B, 3, H, W)
        if frame_pred.shape != target.shape or motion_pred.shape != target.shape:
            raise RuntimeError(f"backend returned frame_pred {tuple(frame_pred.shape)} / motion_pred "
                               f"{tuple(motion_pred.shape)}, expected {tuple(target.shape)}")
        app = psnr(frame_pred, target).numpy().astype(np.float64)  # (B,)
        mot = psnr(motion_pred, motion_target(clip, target)).numpy().astype(np.float64)  # (B,)
        fused = fused_psnr(app, mot, self.model.lam)  # (B,)
        # Squared error on the [0, 1] scale (the PSNR's), averaged over colour: what an ROI mask is applied to.
        err = (((frame_pred - target) / 2) ** 2).mean(dim=1).numpy().astype(np.float32)  # (B, H, W)
        return [RawScore(c, float(a), float(m), float(f), err[i])
                for i, (c, a, m, f) in enumerate(zip(clips, app, mot, fused, strict=True))]
