"""The few most anomalous frames of a stream, kept while it is scored, in bounded memory.

A report shows, per video or camera, the frames the model found most anomalous beside what it predicted and where
it erred. Keeping every frame's pictures until the end would grow with the footage; re-running the model on the
chosen frames afterwards would score them twice. :class:`TopFrames` instead decides frame by frame: it holds at most
``k`` frames, at least ``gap`` frames apart (one anomaly should not fill every place with its neighbours), and asks
for a frame's pictures only when the frame gets a place (``make_images`` is called then, so the caller's copy and
JPEG encoding happen a few dozen times per video, not per frame).

Placement, per offered frame with value ``v`` (higher = more anomalous): a kept frame closer than ``gap`` is a rival;
the new frame replaces its rivals when it beats all of them, and is dropped otherwise; with no rival it takes a free
place, or the place of the weakest kept frame when it beats it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class KeptFrame:
    """One kept frame: its source index, the value it was ranked by, its pictures as JPEG bytes (name → bytes, in
    the order given) and plain numbers about it (``info``: PSNRs, the score, ...)."""

    index: int
    value: float
    images: dict[str, bytes]
    info: dict[str, float | int | str | None] = field(default_factory=dict)


class TopFrames:
    """At most ``k`` frames with the highest values, at least ``gap`` frames apart; pictures scaled to at most
    ``max_side`` pixels and JPEG-encoded when a frame is placed."""

    def __init__(self, k: int = 3, gap: int = 0, max_side: int = 256, quality: int = 85) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if gap < 0:
            raise ValueError(f"gap must be >= 0, got {gap}")
        self.k, self.gap, self.max_side, self.quality = int(k), int(gap), int(max_side), int(quality)
        self._kept: list[KeptFrame] = []

    def _rivals(self, index: int) -> list[KeptFrame]:
        return [f for f in self._kept if abs(f.index - index) < max(self.gap, 1)]

    def wants(self, index: int, value: float) -> bool:
        """Whether a frame with this index and value would get a place (cheap; no state changes)."""
        if not math.isfinite(value):
            return False
        rivals = self._rivals(index)
        if rivals:
            return value > max(f.value for f in rivals)
        return len(self._kept) < self.k or value > min(f.value for f in self._kept)

    def offer(self, index: int, value: float, make_images: Callable[[], Mapping[str, np.ndarray]],
              info: Mapping[str, float | int | str | None] | None = None) -> bool:
        """Place the frame if it earns a place (see the module docstring); ``make_images()`` → name → (H, W, 3)
        uint8 RGB is called only then. Returns whether it was placed."""
        if not self.wants(index, value):
            return False
        from m2s2l_edge.report.images import encode_jpeg, fit_width

        images = {name: encode_jpeg(fit_width(img, self.max_side), self.quality)
                  for name, img in make_images().items()}
        rivals = self._rivals(index)
        if rivals:
            self._kept = [f for f in self._kept if f not in rivals]
        elif len(self._kept) >= self.k:
            self._kept.remove(min(self._kept, key=lambda f: f.value))
        self._kept.append(KeptFrame(int(index), float(value), images, dict(info or {})))
        return True

    def frames(self) -> list[KeptFrame]:
        """The kept frames, most anomalous first."""
        return sorted(self._kept, key=lambda f: -f.value)

    def __len__(self) -> int:
        return len(self._kept)
