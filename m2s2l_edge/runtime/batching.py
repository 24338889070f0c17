"""Run a model whose batch size is fixed on any number of clips: split into chunks, pad the last one, trim."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def check_clips(clips: np.ndarray, expected: tuple[int | str, ...]) -> np.ndarray:
    """Validate (B, T, 3, H, W) clips against an input spec (a str is a free dimension); returns float32 clips."""
    clips = np.asarray(clips)
    if clips.ndim != len(expected) or any(
        isinstance(want, int) and i > 0 and got != want
        for i, (got, want) in enumerate(zip(clips.shape, expected, strict=True))
    ):
        shown = ", ".join("B" if i == 0 else str(d) for i, d in enumerate(expected))
        raise ValueError(f"clips must be shaped (B, T, C, H, W) = ({shown}), got {tuple(clips.shape)}")
    if clips.shape[0] < 1:
        raise ValueError("clips hold no clip (batch size 0)")
    if not np.issubdtype(clips.dtype, np.floating):
        raise ValueError(f"clips must be floating point in [-1, 1], got {clips.dtype}")
    return np.ascontiguousarray(clips, dtype=np.float32)


def run_in_batches(
    run: Callable[[np.ndarray], dict[str, np.ndarray]], clips: np.ndarray, batch: int | None
) -> dict[str, np.ndarray]:
    """``run`` on ``clips`` (B, ...) when the model takes exactly ``batch`` clips (None: any number).

    The last chunk is padded by repeating its final clip; padded results are dropped. Outputs are concatenated
    along the batch dimension.
    """
    n = clips.shape[0]
    if batch is None or n == batch:
        return run(clips)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, batch):
        chunk = clips[start:start + batch]
        valid = chunk.shape[0]
        if valid < batch:
            pad = np.repeat(chunk[-1:], batch - valid, axis=0)
            chunk = np.concatenate([chunk, pad], axis=0)
        for name, value in run(chunk).items():
            parts.setdefault(name, []).append(value[:valid])
    return {name: np.concatenate(values, axis=0) for name, values in parts.items()}
