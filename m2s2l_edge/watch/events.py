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

Camera faults (:mod:`.faults`) use the same message layout and id scheme, through :class:`Lifecycle`. The ROI
geometry and its scoring are :mod:`.regions`; the clip's frame ring, collection and background encoding are
:mod:`.clips`; this module is the state machine, its snapshots and its messages.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from m2s2l_edge.scoring.stream import SMOOTHING, Smoother

from .clips import ClipRecorder, EventClip
from .regions import Polygon, RegionScorer, check_rois_fit, parse_rois
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
    clip: EventClip | None = None
    levels: tuple[float, float] = (math.nan, math.nan)
    snapshot_written: bool = False


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
        self._regions = RegionScorer(self.cfg.rois, score_fn) if self.cfg.rois else None
        self._checked_size: tuple[int, int] | None = None
        # Clips only where they can be written (a media folder) and are asked for.
        self._clips = (ClipRecorder(camera, media, clip_width=self.cfg.clip_width, max_frames=self.cfg.max_clip_frames,
                                    pre_roll_s=self.cfg.pre_roll_s,
                                    horizon_s=self.cfg.pre_roll_s + self.cfg.min_duration_s)
                       if self.media_dir is not None and self.cfg.clip else None)
        self._warned_nonfinite = False

    def set_rois(self, rois) -> None:
        """Score from these ROIs from the next frame on (parsed by :func:`parse_rois`; () scores the whole frame).
        Called from the thread that calls :meth:`update`."""
        import dataclasses

        cfg = dataclasses.replace(self.cfg, rois=parse_rois(rois))
        if cfg.rois and self.score_fn is None:
            raise ValueError(f"camera {self.camera!r}: ROIs need the calibration's score function (score_fn)")
        self.cfg = cfg
        self._regions = RegionScorer(cfg.rois, self.score_fn) if cfg.rois else None
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
        if self._regions is None:
            return float(fs.score), None
        return self._regions.best(fs)

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
        if self._clips is not None:
            self._clips.remember(fs.frame, fs.stream_time)

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
        if self._clips is not None:
            out += self._clip_messages(self._clips.close())
        self._smooth.reset()
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

    def _start_clip(self, ev: _Event) -> None:
        if self._clips is not None:
            ev.clip = self._clips.start(self.media_dir / f"{ev.life.id}.mp4", ev.life.first["stream_time"])

    def _finished_clips(self) -> list[dict[str, Any]]:
        return self._clip_messages(self._clips.done()) if self._clips is not None else []

    def _clip_messages(self, done: list[tuple[dict[str, Any], Exception | None]]) -> list[dict[str, Any]]:
        """The held-back end messages of written clips; a clip that failed is counted and its message says none."""
        out = []
        for msg, err in done:
            if err is not None:
                self.stats.media_errors += 1
                logger.warning("camera %s: clip %s not written: %s", self.camera, msg.get("clip"), err)
                msg["clip"] = None
            out.append(msg)
        return out


def _r(x: float) -> float | None:
    x = float(x)
    return round(x, 4) if math.isfinite(x) else None
