"""Plain records passed between the watch pipeline's stages (capture → scoring → events → sinks).

They carry numpy arrays and floats only, so the event, fault and sink code never needs torch or a backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FrameScore:
    """The model's verdict on one frame of one camera (the last frame of the clip it closed).

    Times: `stream_time` is seconds since the stream started (frame index / fps for files, capture clock for live
    sources), `wall_time` the unix time of the capture, `capture_time` time.monotonic() at capture (latency is
    measured against it). `psnr_app`, `psnr_mot` are the frame PSNRs, `fused` the λ-fused PSNR the score is made of
    (of worst windows for the stream score, of whole frames for paper) in dB (high = normal); `terms` holds every
    per-frame term (m2s2l_edge.scoring.terms.TERMS); `score` is calibrated so that 0 is a typical normal frame and
    higher is more anomalous; `threshold` is on the `score` scale.
    """

    camera: str
    frame_index: int
    stream_time: float
    wall_time: float
    capture_time: float
    psnr_app: float
    psnr_mot: float
    fused: float
    score: float
    threshold: float
    # (h, w) float32 per-pixel squared error of the frame prediction at the model's resolution.
    error_map: np.ndarray = field(repr=False, compare=False)
    # (H, W, 3) uint8 RGB at the source's resolution.
    frame: np.ndarray = field(repr=False, compare=False)
    terms: Mapping[str, float] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class CameraStatus:
    """A camera going online or offline; `reason` says why (opened, read timeout, end of stream, ...)."""

    camera: str
    online: bool
    reason: str
    wall_time: float
    stream_time: float


def config_from_mapping(cls, data: Mapping[str, Any] | None, what: str):
    """A frozen config dataclass ``cls`` from a YAML/JSON mapping (a camera's ``events:`` or ``faults:`` section);
    unknown keys are a ValueError naming the allowed ones."""
    data = dict(data or {})
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    return cls(**data)
