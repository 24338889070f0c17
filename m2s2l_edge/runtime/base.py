"""One interface for every inference backend (PyTorch, ONNX Runtime, TensorRT).

A backend takes a batch of clips and returns the model's two predictions; scoring, evaluation and benchmarking are
written once against this interface.

Shapes:
    clips:       (B, T, 3, H, W) float32 in [-1, 1]   (T past frames; the target is frame T+1)
    frame_pred:  (B, 3, H, W)                          (predicted next frame, [-1, 1])
    motion_pred: (B, 3, H, W)                          (predicted frame difference, target - last input frame)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # a str marks a dynamic dimension (e.g. "batch")
    dtype: str  # numpy dtype name


@runtime_checkable
class Backend(Protocol):
    """What every runtime backend provides."""

    name: str

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def metadata(self) -> dict:
        """Model config, preset, clip length, resolution, normalisation, λ and versions."""
        ...

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch: ``clips`` (B, T, 3, H, W) float32 → {"frame_pred": ..., "motion_pred": ...}."""
        ...


def backend_geometry(backend) -> tuple[int, tuple[int, int]]:
    """(T, (H, W)) a backend expects, read from its first input spec (B, T, 3, H, W)."""
    shape = tuple(backend.inputs[0].shape)
    if len(shape) != 5 or not all(isinstance(s, int) for s in shape[1:]):
        raise ValueError(f"backend {getattr(backend, 'name', backend)!r} input shape {shape} is not (B, T, 3, H, W) "
                         f"with fixed T, H, W")
    return int(shape[1]), (int(shape[3]), int(shape[4]))
