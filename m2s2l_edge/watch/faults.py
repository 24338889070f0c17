"""Camera faults: a frozen feed, black or saturated frames, lost signal — events of their own kinds.

A prediction-error score cannot see a stalled camera: a repeated frame is the easiest frame there is to predict, so
the anomaly score of a frozen feed is *low*. These checks look at the frames themselves, on every captured frame
(they cost ~1 ms per VGA frame), and produce messages in the event layout (:class:`.events.Lifecycle`): same id
scheme, ``start`` / ``end``, kinds ``frozen``, ``black``, ``saturated``, ``signal_lost``.

Frozen: a frame is a *repeat* when, on a grid of ``frozen_tiles`` × ``frozen_tiles`` tiles, the largest tile's mean
absolute difference to the previous frame (grey levels, 8 bit) is below ``frozen_level``. Why this statistic:

* a live camera always differs from its previous frame: sensor noise of σ grey levels gives a mean absolute
  difference of about 1.13·σ in *every* tile (σ ≥ 1 on real sensors), and motion raises the tile it is in — the
  largest tile catches one small moving object that a whole-frame mean would average away;
* a stalled feed repeats the same decoded image, so every tile differs by ~0 (between a codec's key frames a
  re-encoded repeat differs by well under a grey level).

A feed is frozen once, for ``frozen_s`` seconds of stream time, at least ``frozen_fraction`` of the frames were
repeats: a video codec's periodic key frame re-sends a stalled picture with fresh quantisation, so a few frames of a
real stall are not repeats (MPEG-4 at its default 12-frame GOP: about a quarter), while a feed that merely duplicates
every other frame (50 %) is not frozen. Limits: a perfectly still scene behind an encoder that removes its noise
(low bit rate, skipped macroblocks) looks the same as a stall — raise ``frozen_s`` for such a camera; a camera whose
on-screen clock keeps ticking over a frozen image is not seen as frozen (the clock's tile changes). Black and
saturated frames are not counted as repeats (a flat image says nothing about a stall; they are their own kinds).

Black / saturated: at least ``flat_fraction`` of the pixels have luma ≤ ``black_level`` (≥ ``saturated_level``),
on every frame for ``min_duration_s``; noise of a few grey levels does not move a frame across these levels.

Every fault ends once its condition has been absent for ``clear_s`` in a row; ``last`` is then the last frame that
showed it. Signal lost comes from the capture (:meth:`FaultDetector.set_online`); after it the frozen check starts
afresh.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .events import TIME_EPS, Lifecycle, moment
from .types import config_from_mapping

KINDS = ("frozen", "black", "saturated", "signal_lost")
# Frames wider than this are subsampled (every k-th pixel, which keeps the per-pixel noise a live camera shows).
_CHECK_WIDTH = 640
# Frames a debounce window holds at most (5 s at 60 fps is 300): bounds memory for long windows at high rates.
_MAX_WINDOW = 10_000


@dataclass(frozen=True)
class FaultConfig:
    """Thresholds of the camera-fault checks (see the module docstring). ``kinds`` selects which are reported."""

    kinds: tuple[str, ...] = KINDS
    frozen_s: float = 5.0
    frozen_level: float = 0.5
    frozen_tiles: int = 8
    frozen_fraction: float = 0.6
    black_level: int = 20
    saturated_level: int = 235
    flat_fraction: float = 0.98
    min_duration_s: float = 1.0
    clear_s: float = 0.5

    def __post_init__(self) -> None:
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise ValueError(f"unknown fault kind(s) {', '.join(map(str, bad))}; valid: {', '.join(KINDS)}")
        object.__setattr__(self, "kinds", kinds)
        for name in ("frozen_s", "min_duration_s", "clear_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a number >= 0 (seconds), got {v!r}")
        if not (isinstance(self.frozen_level, int | float) and 0 < self.frozen_level < 255):
            raise ValueError(f"frozen_level must be in (0, 255) grey levels, got {self.frozen_level!r}")
        if not isinstance(self.frozen_tiles, int) or not 1 <= self.frozen_tiles <= 64:
            raise ValueError(f"frozen_tiles must be an integer in 1..64, got {self.frozen_tiles!r}")
        if not (isinstance(self.black_level, int) and 0 <= self.black_level < 128):
            raise ValueError(f"black_level must be an integer in 0..127, got {self.black_level!r}")
        if not (isinstance(self.saturated_level, int) and 128 <= self.saturated_level <= 255):
            raise ValueError(f"saturated_level must be an integer in 128..255, got {self.saturated_level!r}")
        for name in ("flat_fraction", "frozen_fraction"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 < v <= 1):
                raise ValueError(f"{name} must be in (0, 1], got {v!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> FaultConfig:
        """Build from a YAML/JSON mapping (a camera's ``faults:`` section); unknown keys are a ValueError."""
        return config_from_mapping(cls, data, "fault")


@dataclass(frozen=True)
class FrameStats:
    """What the checks measured on one frame (exposed for tuning and tests)."""

    tile_diff: float | None  # largest tile mean |Δ| to the previous frame, grey levels (None: no previous frame)
    dark: float  # fraction of pixels with luma <= black_level
    bright: float  # fraction of pixels with luma >= saturated_level


class _Condition:
    """One fault kind's debounce, tolerant of stray frames.

    A *run* starts at the first frame showing the condition and lasts until the condition has been absent for
    ``clear`` seconds in a row. The fault starts once the run is ``hold`` seconds old and at least ``fraction`` of
    the frames of the last ``hold`` seconds showed the condition; it ends with its run.
    """

    def __init__(self, camera: str, kind: str, hold: float, clear: float, fraction: float = 1.0) -> None:
        self.camera, self.kind, self.hold, self.clear, self.fraction = camera, kind, hold, clear, fraction
        self.window: deque[tuple[float, bool, dict[str, Any], float]] = deque(maxlen=_MAX_WINDOW)
        self.run: dict[str, Any] | None = None  # first moment of the current run
        self.absent_since: float | None = None
        self.life: Lifecycle | None = None
        self.last: dict[str, Any] | None = None  # last frame showing the condition
        self.detail: dict[str, Any] = {}

    def step(self, present: bool, now: dict[str, Any], wall: float, detail: dict[str, Any]) -> list[dict[str, Any]]:
        t = now["stream_time"]
        out: list[dict[str, Any]] = []
        self.window.append((t, present, now, wall))
        while self.window and self.window[0][0] < t - self.hold - TIME_EPS:
            self.window.popleft()
        if present:
            self.absent_since = None
            self.run = now if self.run is None else self.run
            self.last = now
            self.detail = detail
        elif self.run is not None:
            self.absent_since = t if self.absent_since is None else self.absent_since
            if t - self.absent_since >= self.clear - TIME_EPS:
                if self.life is not None:
                    out.append(self._msg("end", end_reason="cleared"))
                self.reset()
                return out
        if self.life is None and self.run is not None and t - self.run["stream_time"] >= self.hold - TIME_EPS:
            shown = [e for e in self.window if e[1] and e[0] >= self.run["stream_time"]]
            if shown and len(shown) >= self.fraction * len(self.window):
                _, _, first, first_wall = shown[0]
                self.life = Lifecycle(self.camera, self.kind, first, first_wall)
                out.append(self._msg("start"))
        return out

    def _msg(self, state: str, **extra: Any) -> dict[str, Any]:
        assert self.life is not None and self.last is not None
        return self.life.message(state, self.last, peak=None, detail=dict(self.detail), **extra)

    def reset(self) -> None:
        self.life, self.run, self.absent_since = None, None, None
        self.window.clear()

    def stop(self, reason: str) -> list[dict[str, Any]]:
        out = [self._msg("end", end_reason=reason)] if self.life is not None else []
        self.reset()
        return out


class FaultDetector:
    """Camera faults of one camera.

    ``check(frame, frame_index, stream_time, wall_time)`` on every captured frame (RGB uint8, (H, W, 3)) returns
    the fault messages it caused; ``set_online(False, ...)`` when the capture reports the camera offline starts a
    ``signal_lost`` fault (and ends the frame faults: nothing is known about frames that do not arrive),
    ``set_online(True, ...)`` ends it; ``close()`` ends whatever is open (``end_reason`` "closed").
    """

    def __init__(self, camera: str, cfg: FaultConfig | None = None) -> None:
        self.camera = camera
        self.cfg = cfg or FaultConfig()
        c = self.cfg
        self._frozen = _Condition(camera, "frozen", c.frozen_s, c.clear_s, c.frozen_fraction)
        self._black = _Condition(camera, "black", c.min_duration_s, c.clear_s)
        self._saturated = _Condition(camera, "saturated", c.min_duration_s, c.clear_s)
        self._lost: Lifecycle | None = None
        self._lost_last: dict[str, Any] | None = None
        self._lost_reason = ""
        self._prev: np.ndarray | None = None
        self._last_moment: dict[str, Any] | None = None
        self.last_stats: FrameStats | None = None

    def measure(self, frame: np.ndarray) -> FrameStats:
        """Grey-level statistics of ``frame`` against the previous frame given to :meth:`measure`."""
        import cv2

        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(
                f"camera {self.camera!r}: frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}"
            )
        step = max(1, math.ceil(frame.shape[1] / _CHECK_WIDTH))
        grey = cv2.cvtColor(np.ascontiguousarray(frame[::step, ::step]), cv2.COLOR_RGB2GRAY)  # (h, w) uint8
        dark = float(np.count_nonzero(grey <= self.cfg.black_level)) / grey.size
        bright = float(np.count_nonzero(grey >= self.cfg.saturated_level)) / grey.size
        tile = None
        if self._prev is not None and self._prev.shape == grey.shape:
            diff = cv2.absdiff(grey, self._prev).astype(np.float32)
            n = min(self.cfg.frozen_tiles, grey.shape[0], grey.shape[1])
            # INTER_AREA down to n × n averages each tile: the per-tile mean |Δ|.
            tile = float(cv2.resize(diff, (n, n), interpolation=cv2.INTER_AREA).max())
        self._prev = grey
        return FrameStats(tile, dark, bright)

    def check(self, frame: np.ndarray, frame_index: int, stream_time: float, wall_time: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        now = moment(frame_index, stream_time, wall_time)
        if self._last_moment is not None and stream_time < self._last_moment["stream_time"]:
            out += self.close("stream_restart")
        st = self.measure(frame)
        self.last_stats = st
        self._last_moment = now
        kinds = self.cfg.kinds
        black = st.dark >= self.cfg.flat_fraction
        saturated = st.bright >= self.cfg.flat_fraction
        repeat = st.tile_diff is not None and st.tile_diff < self.cfg.frozen_level and not (black or saturated)
        if "frozen" in kinds:
            detail = {"tile_diff": _r(st.tile_diff), "frozen_level": self.cfg.frozen_level}
            if st.tile_diff is not None:
                out += self._frozen.step(repeat, now, wall_time, detail)
        if "black" in kinds:
            out += self._black.step(black, now, wall_time, {"dark_fraction": _r(st.dark)})
        if "saturated" in kinds:
            out += self._saturated.step(saturated, now, wall_time, {"bright_fraction": _r(st.bright)})
        return out

    def set_online(
        self, online: bool, wall_time: float, stream_time: float | None = None, reason: str = ""
    ) -> list[dict[str, Any]]:
        """The capture's online / offline state; returns ``signal_lost`` start / end messages."""
        out: list[dict[str, Any]] = []
        last = self._last_moment
        now = moment(last["frame"] if last else None, stream_time, wall_time)
        if not online:
            out += self._end_frame_faults("signal_lost")
            # A clip never spans a gap, nor does a repeat: the next frame starts the frozen check afresh.
            self._prev = None
            if self._lost is None and "signal_lost" in self.cfg.kinds:
                self._lost = Lifecycle(self.camera, "signal_lost", now, wall_time)
                self._lost_last, self._lost_reason = now, reason
                out.append(self._lost.message("start", now, peak=None, detail={"reason": reason}))
        elif self._lost is not None:
            out.append(
                self._lost.message("end", now, peak=None, detail={"reason": self._lost_reason}, end_reason="online")
            )
            self._lost = None
        return out

    def _end_frame_faults(self, reason: str) -> list[dict[str, Any]]:
        out = []
        for cond in (self._frozen, self._black, self._saturated):
            out += cond.stop(reason)
        return out

    def close(self, reason: str = "closed") -> list[dict[str, Any]]:
        out = self._end_frame_faults(reason)
        if self._lost is not None:
            assert self._lost_last is not None
            out.append(
                self._lost.message(
                    "end", self._lost_last, peak=None, detail={"reason": self._lost_reason}, end_reason=reason
                )
            )
            self._lost = None
        self._prev = None
        self._last_moment = None
        return out

    @property
    def active(self) -> list[str]:
        """Kinds of the faults open now."""
        kinds = [c.kind for c in (self._frozen, self._black, self._saturated) if c.life is not None]
        return kinds + (["signal_lost"] if self._lost is not None else [])


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)
