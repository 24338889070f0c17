"""From per-frame scores to events: smoothing, hysteresis, minimum duration, cooldown, ROIs, snapshots and clips.

One :class:`EventTracker` per camera turns its stream of :class:`~m2s2l_edge.watch.types.FrameScore` into event
messages (plain dicts, the JSON schema in docs/WATCH_EVENTS.md). The state machine runs on *stream* time, so a
``--replay`` of a file gives the same events however fast it runs:

    idle ──score ≥ on──▶ pending ──held ≥ off for min_duration_s──▶ active (start) ──score < off──▶ ended (end)
                           └──score < off before that: dropped (a short excursion, counted)      └─ cooldown_s ─▶ idle

``score`` is the smoothed calibrated score (a moving average over ``smoothing_frames`` frames by default, by the same
:class:`~m2s2l_edge.scoring.stream.Smoother` the calibration fits its threshold with). With ROIs it is the largest
ROI score (the calibration's score of the ROI's terms, :func:`m2s2l_edge.scoring.terms.region_terms`). While
active, an ``update`` goes out when the peak has grown and ``update_interval_s`` has passed since the last message.

Camera faults (:mod:`.faults`) use the same message layout and id scheme, through :class:`Lifecycle`.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from m2s2l_edge.scoring.stream import SMOOTHING, Smoother

from .types import FrameScore, config_from_mapping

logger = logging.getLogger(__name__)

SCHEMA = 1
STATES = ("start", "update", "end")
# Stream times are sums of frame periods (0.6 - 0.4 = 0.19999999999999996): durations compare with this slack.
TIME_EPS = 1e-6
# Characters kept in ids and file names; anything else in a camera name becomes "_".
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def iso_time(wall_time: float | None) -> str | None:
    """Unix seconds → ``2026-12-01T08:15:02.120Z`` (UTC, milliseconds)."""
    if wall_time is None or not math.isfinite(wall_time):
        return None
    return datetime.fromtimestamp(wall_time, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def safe_name(camera: str) -> str:
    return _SAFE.sub("_", camera) or "_"


def moment(frame_index: int | None, stream_time: float | None, wall_time: float | None) -> dict[str, Any]:
    """The three clocks of one instant: source frame index, stream seconds, wall time (ISO 8601 UTC)."""
    return {
        "frame": None if frame_index is None else int(frame_index),
        "stream_time": None if stream_time is None else round(float(stream_time), 6),
        "wall_time": iso_time(wall_time),
    }


class Lifecycle:
    """One event or fault from ``start`` to ``end``: its id, its message counter and the message layout.

    The id is ``<camera>-<kind>-<start wall time, UTC to the ms>-<first frame>``: the same in every message of the
    event, unique across restarts of the process (wall time) and within one run (frame indices only grow), and
    deterministic for a replay with a fixed clock.
    """

    def __init__(self, camera: str, kind: str, first: dict[str, Any], wall_time: float | None) -> None:
        stamp = (iso_time(wall_time) or "unknown").replace("-", "").replace(":", "")
        self.id = f"{safe_name(camera)}-{kind}-{stamp}-{first['frame'] if first['frame'] is not None else 'x'}"
        self.camera = camera
        self.kind = kind
        self.first = first
        self.seq = 0

    def message(self, state: str, last: dict[str, Any], **extra: Any) -> dict[str, Any]:
        assert state in STATES
        msg: dict[str, Any] = {
            "type": "event",
            "schema": SCHEMA,
            "id": self.id,
            "camera": self.camera,
            "kind": self.kind,
            "state": state,
            "seq": self.seq,
            "time": last["wall_time"],
            "first": self.first,
            "last": last,
            "duration_s": _duration(self.first, last),
        }
        msg.update(extra)
        self.seq += 1
        return msg


def _duration(first: Mapping[str, Any], last: Mapping[str, Any]) -> float | None:
    if first.get("stream_time") is None or last.get("stream_time") is None:
        return None
    return round(max(0.0, last["stream_time"] - first["stream_time"]), 6)


Polygon = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class EventConfig:
    """How one camera's scores become anomaly events. Levels are on the calibrated score's scale (0 = typical
    normal frame, higher = more anomalous).

    on / off: hysteresis levels; ``on=None`` takes the calibration's threshold (``FrameScore.threshold``) and
        ``off=None`` takes half of ``on`` (halfway back to typical normal).
    smoothing / smoothing_frames: ``mean`` (trailing moving average, what the calibration's threshold assumes:
        keep N equal to the calibration's ``window``), ``median`` (robust to one-frame spikes), ``ema``
        (α = 2 / (N + 1)) over N scored frames, or ``none``.
    min_duration_s: the smoothed score must stay ≥ off this long after crossing ``on`` before the event starts.
    cooldown_s: after an event ends, no new event starts on this camera for this long.
    update_interval_s: least stream time between two messages of one event.
    rois: polygons ((x, y), ...) in source-frame pixels; the event score is then the largest ROI score.
    snapshot: write ``<id>.jpg`` (heat map over the frame at the peak) when a media folder is given.
    clip / pre_roll_s / post_roll_s: write ``<id>.mp4`` from ``pre_roll_s`` before the first frame to
        ``post_roll_s`` after the last; frames are scaled to at most ``clip_width`` pixels wide, and a clip holds
        at most ``max_clip_frames`` (the buffer is bounded whatever the event's length).
    """

    on: float | None = None
    off: float | None = None
    smoothing: str = "mean"
    smoothing_frames: int = 5
    min_duration_s: float = 0.5
    cooldown_s: float = 5.0
    update_interval_s: float = 1.0
    rois: tuple[Polygon, ...] = ()
    snapshot: bool = True
    clip: bool = False
    pre_roll_s: float = 2.0
    post_roll_s: float = 2.0
    clip_width: int = 640
    max_clip_frames: int = 600

    def __post_init__(self) -> None:
        if self.smoothing not in SMOOTHING:
            raise ValueError(f"smoothing must be one of {', '.join(SMOOTHING)}, got {self.smoothing!r}")
        if not isinstance(self.smoothing_frames, int) or self.smoothing_frames < 1:
            raise ValueError(f"smoothing_frames must be an integer >= 1, got {self.smoothing_frames!r}")
        for name in ("on", "off"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number (calibrated score units), got {v!r}")
        if self.on is not None and self.off is not None and not self.off < self.on:
            raise ValueError(f"off ({self.off}) must be below on ({self.on}) for hysteresis")
        if self.on is not None and self.off is None and not self.on > 0:
            raise ValueError(f"on = {self.on} is not above typical normal (0): give off explicitly")
        for name in ("min_duration_s", "cooldown_s", "update_interval_s", "pre_roll_s", "post_roll_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a number >= 0 (seconds), got {v!r}")
        if not isinstance(self.clip_width, int) or self.clip_width < 16:
            raise ValueError(f"clip_width must be an integer >= 16, got {self.clip_width!r}")
        if not isinstance(self.max_clip_frames, int) or self.max_clip_frames < 1:
            raise ValueError(f"max_clip_frames must be an integer >= 1, got {self.max_clip_frames!r}")
        object.__setattr__(self, "rois", parse_rois(self.rois))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> EventConfig:
        """Build from a YAML/JSON mapping (a camera's ``events:`` section); unknown keys are a ValueError."""
        return config_from_mapping(cls, data, "event")

    def levels(self, threshold: float) -> tuple[float, float]:
        """(on, off) with the calibration's ``threshold`` filling an unset ``on``."""
        on = float(threshold) if self.on is None else float(self.on)
        off = self.off if self.off is not None else on / 2.0
        if not off < on:
            raise ValueError(f"off level {off} must be below on level {on}; set events.off explicitly")
        return on, float(off)

    def check_frame(self, width: int, height: int, camera: str = "") -> None:
        """ValueError when an ROI point lies outside a ``width`` × ``height`` frame."""
        check_rois_fit(self.rois, width, height, camera)


def check_rois_fit(rois: Sequence[Polygon], width: int, height: int, camera: str = "") -> None:
    """ValueError when a point of an ROI lies outside a ``width`` × ``height`` frame: the one bounds check (a camera's
    YAML ROIs on its first frame, the tracker on every new frame size)."""
    who = f"camera {camera!r}: " if camera else ""
    for i, poly in enumerate(rois):
        for x, y in poly:
            if not (0 <= x <= width and 0 <= y <= height):
                raise ValueError(
                    f"{who}ROI {i} point ({x:g}, {y:g}) lies outside the {width}x{height} frame "
                    f"(x must be in 0..{width}, y in 0..{height})"
                )


def parse_rois(rois: Any) -> tuple[Polygon, ...]:
    """ROIs from YAML / JSON: a list of polygons, or one polygon, each at least 3 [x, y] points of finite numbers >= 0
    enclosing an area → a tuple of polygons of (x, y) floats (the one ROI parser: ``--config`` and ``events:``)."""
    if rois is None:
        return ()
    if not isinstance(rois, Sequence) or isinstance(rois, str):
        raise ValueError("rois must be a list of polygons, each a list of [x, y] points")
    if rois and all(isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2
                    and all(isinstance(c, int | float) for c in p) for p in rois):
        rois = [rois]  # one polygon given bare
    out = []
    for i, poly in enumerate(rois):
        if not isinstance(poly, Sequence) or isinstance(poly, str) or len(poly) < 3:
            raise ValueError(f"ROI {i} must be a list of at least 3 [x, y] points, got {poly!r}")
        pts = []
        for p in poly:
            if (
                not isinstance(p, Sequence)
                or isinstance(p, str)
                or len(p) != 2
                or not all(isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) and c >= 0
                           for c in p)
            ):
                raise ValueError(f"ROI {i}: every point must be [x, y] with finite numbers >= 0 (source pixels), "
                                 f"got {p!r}")
            pts.append((float(p[0]), float(p[1])))
        xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
        if area <= 0:
            raise ValueError(f"ROI {i} has zero area (its points are collinear)")
        out.append(tuple(pts))
    return tuple(out)


def roi_mask(poly: Polygon, map_shape: tuple[int, int], frame_shape: tuple[int, int]) -> np.ndarray:
    """The polygon (source-frame pixels) rasterised on the error map's grid; (h, w) bool, never empty."""
    import cv2

    h, w = map_shape
    fh, fw = frame_shape
    pts = np.array([[x * w / fw, y * h / fh] for x, y in poly], np.float32)
    mask = np.zeros((h, w), np.uint8)
    # fillPoly takes fixed-point coordinates: 4 fractional bits keep small ROIs on a coarse map accurate.
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    if not mask.any():
        # An ROI smaller than one error-map pixel: use the pixel under its centroid.
        cx, cy = pts.mean(axis=0)
        mask[min(int(cy), h - 1), min(int(cx), w - 1)] = 1
    return mask.astype(bool)


@dataclass
class _Event:
    life: Lifecycle
    peak: dict[str, Any]
    last: dict[str, Any]
    peak_frame: np.ndarray | None = None
    peak_error: np.ndarray | None = None
    peak_sent: float = -math.inf
    last_msg_time: float = -math.inf
    confirmed: bool = False
    roi: int | None = None
    clip: _Clip | None = None
    levels: tuple[float, float] = (math.nan, math.nan)
    snapshot_written: bool = False


@dataclass
class _Clip:
    path: Path
    frames: list[np.ndarray]
    times: list[float]
    until: float = math.inf  # stream time at which the post-roll is complete
    end_msg: dict[str, Any] | None = None
    truncated: bool = False


@dataclass
class TrackerStats:
    frames: int = 0
    events: int = 0
    short_excursions: int = 0
    frames_in_cooldown: int = 0
    skipped_nonfinite: int = 0
    media_errors: int = 0
    frames_above_on: int = 0  # frames whose smoothed score reached the on level in force
    peak_score: float | None = None  # the largest smoothed score seen
    peak_frame: int | None = None


class EventTracker:
    """Anomaly events of one camera.

    ``tracker.update(fs)`` for every scored frame returns the messages that frame caused (often none);
    ``tracker.close()`` ends an open event (``end_reason`` "closed", or the reason given, e.g. "signal_lost" when
    the camera went offline) and returns the last messages; the tracker can be used again afterwards.

    media_dir: folder for snapshots / clips (``--snapshots DIR``); None writes neither.
    media: the folder's :class:`.retention.MediaStore` (size and age limits), shared by every camera's tracker;
        None keeps every file.
    score_fn: ``(frame_score, mask) -> calibrated score`` of the region ``mask`` (h, w) bool of the error map, the
        calibration's own mapping applied to the region's terms; required with ROIs (docs/WATCH_EVENTS.md).
    """

    def __init__(
        self,
        camera: str,
        cfg: EventConfig | None = None,
        media_dir: str | os.PathLike | None = None,
        score_fn: Callable[[FrameScore, np.ndarray], float] | None = None,
        media=None,
    ) -> None:
        self.camera = camera
        self.media = media
        self.cfg = cfg or EventConfig()
        if self.cfg.rois and score_fn is None:
            raise ValueError(f"camera {camera!r}: ROIs need the calibration's score function (score_fn)")
        self.score_fn = score_fn
        self.media_dir = Path(media_dir) if media_dir is not None else None
        if self.media_dir is not None and not self.media_dir.is_dir():
            raise ValueError(f"snapshot folder {self.media_dir} does not exist")
        self.stats = TrackerStats()
        self._smooth = Smoother(self.cfg.smoothing, self.cfg.smoothing_frames)
        self.smoothed: float | None = None  # the last frame's smoothed score (None before the first, or skipped)
        self._event: _Event | None = None
        self._cooldown_until = -math.inf
        self._last_time: float | None = None
        self._masks: dict[tuple, list[np.ndarray]] = {}
        self._checked_size: tuple[int, int] | None = None
        self._roll: deque[tuple[float, np.ndarray]] = deque(maxlen=self.cfg.max_clip_frames)
        self._collecting: list[_Clip] = []
        self._writer: _ClipWriter | None = None
        self._warned_nonfinite = False

    def set_rois(self, rois) -> None:
        """Score from these ROIs from the next frame on (parsed by :func:`parse_rois`; () scores the whole frame).
        Called from the thread that calls :meth:`update`."""
        import dataclasses

        cfg = dataclasses.replace(self.cfg, rois=parse_rois(rois))
        if cfg.rois and self.score_fn is None:
            raise ValueError(f"camera {self.camera!r}: ROIs need the calibration's score function (score_fn)")
        self.cfg = cfg
        self._masks.clear()
        self._checked_size = None

    @property
    def active(self) -> bool:
        """True while an event has started (its ``start`` went out) and not yet ended."""
        return self._event is not None and self._event.confirmed

    def summary(self) -> dict[str, Any]:
        """Counters for the final ``--json`` summary: frames, events, short excursions, frames in cooldown, ..."""
        return dict(vars(self.stats))

    # ---------------------------------------------------------------- scoring

    def frame_score(self, fs: FrameScore) -> tuple[float, int | None]:
        """The unsmoothed score the state machine sees for this frame, and the ROI it came from (None: whole)."""
        if not self.cfg.rois:
            return float(fs.score), None
        fh, fw = fs.frame.shape[:2]
        key = (fs.error_map.shape, (fh, fw))
        if key not in self._masks:
            self._masks[key] = [roi_mask(p, fs.error_map.shape, (fh, fw)) for p in self.cfg.rois]
        best, where = -math.inf, None
        for i, mask in enumerate(self._masks[key]):
            s = float(self.score_fn(fs, mask))
            if s > best:
                best, where = s, i
        return best, where

    # ---------------------------------------------------------------- lifecycle

    def update(self, fs: FrameScore) -> list[dict[str, Any]]:
        out = self._finished_clips()
        size = (fs.frame.shape[1], fs.frame.shape[0])
        if size != self._checked_size:
            self.cfg.check_frame(*size, camera=self.camera)
            self._checked_size = size
        if self._last_time is not None and fs.stream_time < self._last_time:
            # The stream restarted (a looped file, a camera clock reset): nothing carries over.
            out += self.close("stream_restart")
        self._last_time = fs.stream_time
        self.stats.frames += 1
        self._remember_frame(fs)

        raw, roi = self.frame_score(fs)
        self.smoothed = None
        if math.isnan(raw):
            self.stats.skipped_nonfinite += 1
            if not self._warned_nonfinite:
                logger.warning("camera %s: non-finite score at frame %d skipped", self.camera, fs.frame_index)
                self._warned_nonfinite = True
            return out
        score = self.smoothed = self._smooth(raw)
        on, off = self.cfg.levels(fs.threshold)
        if score >= on:
            self.stats.frames_above_on += 1
        if self.stats.peak_score is None or score > self.stats.peak_score:
            self.stats.peak_score, self.stats.peak_frame = float(score), int(fs.frame_index)
        now = moment(fs.frame_index, fs.stream_time, fs.wall_time)
        point = dict(
            now,
            score=_r(score),
            raw_score=_r(fs.score),
            psnr_app=_r(fs.psnr_app),
            psnr_mot=_r(fs.psnr_mot),
            fused=_r(fs.fused),
        )
        ev = self._event
        if ev is not None:
            ev.levels = (on, off)

        if ev is None:
            if score >= on:
                if fs.stream_time < self._cooldown_until - TIME_EPS:
                    self.stats.frames_in_cooldown += 1
                    return out
                life = Lifecycle(self.camera, "anomaly", now, fs.wall_time)
                ev = _Event(life, peak=point, last=point, roi=roi, levels=(on, off))
                self._event = ev
                self._new_peak(ev, fs, point, roi)
            else:
                return out
        elif score < off:
            if ev.confirmed:
                out += self._end(ev, "below_off")
            else:
                self.stats.short_excursions += 1
            self._event = None
            return out
        else:
            ev.last = point
            if score > ev.peak["score"]:
                self._new_peak(ev, fs, point, roi)

        if not ev.confirmed:
            if fs.stream_time - ev.life.first["stream_time"] >= self.cfg.min_duration_s - TIME_EPS:
                ev.confirmed = True
                self.stats.events += 1
                self._start_clip(ev)
                out.append(self._message(ev, "start", fs.stream_time))
        elif (
            ev.peak["score"] > ev.peak_sent
            and fs.stream_time - ev.last_msg_time >= self.cfg.update_interval_s - TIME_EPS
        ):
            out.append(self._message(ev, "update", fs.stream_time))
        return out

    def close(self, reason: str = "closed") -> list[dict[str, Any]]:
        """End an open event now (``end_reason`` = reason), finish every clip, reset smoothing and cooldown."""
        out = self._finished_clips()
        ev = self._event
        if ev is not None and ev.confirmed:
            out += self._end(ev, reason)
        self._event = None
        for clip in self._collecting:
            clip.until = -math.inf
        self._flush_clips(force=True)
        if self._writer is not None:
            self._writer.join()
            out += self._finished_clips()
            self._writer.stop()
            self._writer = None
        self._smooth.reset()
        self._roll.clear()
        self._last_time = None
        # Stream time may start again from 0 after a reconnect: a cooldown measured on the old clock would be wrong.
        self._cooldown_until = -math.inf
        return out

    # ---------------------------------------------------------------- helpers

    def _message(self, ev: _Event, state: str, stream_time: float) -> dict[str, Any]:
        if ev.peak["score"] > ev.peak_sent:
            self._write_snapshot(ev)
        ev.peak_sent = ev.peak["score"]
        ev.last_msg_time = stream_time
        return ev.life.message(
            state,
            ev.last,
            peak=ev.peak,
            levels={"on": _r(ev.levels[0]), "off": _r(ev.levels[1])},
            roi=ev.roi,
            snapshot=self._snapshot_path(ev) if ev.snapshot_written else None,
            clip=str(ev.clip.path) if ev.clip is not None else None,
        )

    def _end(self, ev: _Event, reason: str) -> list[dict[str, Any]]:
        self._cooldown_until = ev.last["stream_time"] + self.cfg.cooldown_s
        msg = self._message(ev, "end", ev.last["stream_time"])
        msg["end_reason"] = reason
        if ev.clip is None:
            return [msg]
        # The end message waits for its clip (post-roll, then encoding), so the clip exists when it arrives.
        ev.clip.until = ev.last["stream_time"] + self.cfg.post_roll_s
        ev.clip.end_msg = msg
        return []

    def _new_peak(self, ev: _Event, fs: FrameScore, point: dict[str, Any], roi: int | None) -> None:
        ev.peak = point
        ev.roi = roi
        if self.media_dir is not None and self.cfg.snapshot:
            ev.peak_frame = fs.frame.copy()
            ev.peak_error = np.array(fs.error_map, np.float32, copy=True)

    def _snapshot_path(self, ev: _Event) -> str | None:
        if self.media_dir is None or not self.cfg.snapshot:
            return None
        return str(self.media_dir / f"{ev.life.id}.jpg")

    def _write_snapshot(self, ev: _Event) -> None:
        path = self._snapshot_path(ev)
        if path is None or ev.peak_frame is None:
            return
        from m2s2l_edge.io import atomic_write_bytes

        from .annotate import encode_jpeg, heat_overlay

        if self.media is not None and not self.media.room(self.camera):
            return
        try:
            atomic_write_bytes(path, encode_jpeg(heat_overlay(ev.peak_frame, ev.peak_error)))
        except (OSError, RuntimeError) as e:
            # A full disk must not stop the alerts themselves.
            self.stats.media_errors += 1
            logger.warning("camera %s: snapshot %s not written: %s", self.camera, path, e)
            return
        # A rewrite for a higher peak replaces the file, so an earlier snapshot stays valid if this one fails.
        ev.snapshot_written = self.media is None or self.media.added(self.camera, path) or ev.snapshot_written

    def _remember_frame(self, fs: FrameScore) -> None:
        if self.media_dir is None or not self.cfg.clip:
            return
        import cv2

        frame = fs.frame
        if frame.shape[1] > self.cfg.clip_width:
            h = max(2, int(round(frame.shape[0] * self.cfg.clip_width / frame.shape[1])) // 2 * 2)
            frame = cv2.resize(frame, (self.cfg.clip_width, h), interpolation=cv2.INTER_AREA)
        else:
            frame = frame.copy()
        t = fs.stream_time
        self._roll.append((t, frame))
        horizon = self.cfg.pre_roll_s + self.cfg.min_duration_s
        while self._roll and self._roll[0][0] < t - horizon:
            self._roll.popleft()
        for clip in self._collecting:
            if t <= clip.until:
                if len(clip.frames) < self.cfg.max_clip_frames:
                    clip.frames.append(frame)
                    clip.times.append(t)
                else:
                    clip.truncated = True
        self._flush_clips()

    def _start_clip(self, ev: _Event) -> None:
        if self.media_dir is None or not self.cfg.clip:
            return
        t0 = ev.life.first["stream_time"] - self.cfg.pre_roll_s
        pre = [(t, f) for t, f in self._roll if t >= t0]
        clip = _Clip(self.media_dir / f"{ev.life.id}.mp4", [f for _, f in pre], [t for t, _ in pre])
        ev.clip = clip
        self._collecting.append(clip)

    def _flush_clips(self, force: bool = False) -> None:
        now = self._last_time if self._last_time is not None else math.inf
        keep = []
        for clip in self._collecting:
            if clip.end_msg is not None and (force or now > clip.until):
                if self._writer is None:
                    self._writer = _ClipWriter(self.camera, self.media)
                self._writer.submit(clip)
            elif force:
                logger.debug("camera %s: clip %s dropped (its event never ended)", self.camera, clip.path)
            else:
                keep.append(clip)
        self._collecting = keep

    def _finished_clips(self) -> list[dict[str, Any]]:
        if self._writer is None:
            return []
        out = []
        for msg, err in self._writer.done():
            if err is not None:
                self.stats.media_errors += 1
                logger.warning("camera %s: clip %s not written: %s", self.camera, msg.get("clip"), err)
                msg["clip"] = None
            out.append(msg)
        return out


def _r(x: float) -> float | None:
    x = float(x)
    return round(x, 4) if math.isfinite(x) else None


class _ClipWriter:
    """Encodes clips on one background thread so that the watch loop never waits for a video encoder."""

    def __init__(self, camera: str = "", media=None) -> None:
        self.camera = camera
        self.media = media
        self._todo: queue.Queue[_Clip | None] = queue.Queue()
        self._done: queue.Queue[tuple[dict[str, Any], Exception | None]] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="m2s2l-clips", daemon=True)
        self._thread.start()

    def submit(self, clip: _Clip) -> None:
        with self._lock:
            self._pending += 1
        self._todo.put(clip)

    def _run(self) -> None:
        from .annotate import write_clip

        while True:
            clip = self._todo.get()
            if clip is None:
                return
            err: Exception | None = None
            try:
                times = clip.times
                span = times[-1] - times[0] if len(times) > 1 else 0.0
                fps = (len(times) - 1) / span if span > 0 else 25.0
                if self.media is not None and not self.media.room(self.camera):
                    raise OSError("no room: the file system is nearly full")
                write_clip(clip.path, clip.frames, fps)
                if self.media is not None and not self.media.added(self.camera, clip.path):
                    raise OSError("larger than this camera's retention limit (deleted)")
            except (OSError, ValueError, RuntimeError) as e:
                err = e
            assert clip.end_msg is not None
            clip.end_msg["clip_frames"] = len(clip.frames)
            if clip.truncated:
                logger.warning("clip %s holds only its first %d frames (max_clip_frames)", clip.path, len(clip.frames))
            clip.frames = []
            self._done.put((clip.end_msg, err))
            with self._lock:
                self._pending -= 1

    def done(self) -> list[tuple[dict[str, Any], Exception | None]]:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def join(self, timeout: float = 120.0) -> None:
        """Wait until every submitted clip is written (bounded: a wedged encoder cannot hang shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._pending == 0:
                    return
            time.sleep(0.02)
        logger.warning("clip writer still busy after %.0f s; its clips may be incomplete", timeout)

    def stop(self) -> None:
        self._todo.put(None)
