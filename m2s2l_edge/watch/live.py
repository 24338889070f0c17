"""What a running watch publishes for whoever looks: the web view (``watch --ui``) and the end-of-run report
(``watch --report``).

:class:`LiveFeed` is the one interface between the watch and its viewers. The watch writes to it from its hooks
(``scored`` per scored frame, ``message`` per event / fault / status message), each an O(1) append under a short
lock: the latest frame and score per camera (a reference, no copy: frames are never reused), a bounded ring of score
points, a bounded ring of messages. Viewers read it from their own threads and pay for everything else themselves
(copying, JPEG encoding, JSON), so nothing a viewer does can make capture or scoring wait; a viewer that never reads
costs the watch a few appends per frame. ``health()`` and ``controls`` are given by the watch service
(:func:`m2s2l_edge.watch.service.run_watch`): the camera health the watch already measures, and the settings a
viewer may change while it runs (:class:`Controls`).

For the report, the feed also keeps, in bounded memory, each camera's whole-run score curve (peak-preserving
decimation: :class:`PeakHistory`) and its most anomalous frames with their error maps
(:class:`~m2s2l_edge.report.frames.TopFrames`).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from m2s2l_edge.watch.types import FrameScore

LIVE_POINTS = 3000  # score points per camera the live view can show (2 min at 25 fps)
MESSAGES = 500  # the newest messages, for viewers catching up
EVENTS = 1000  # the newest events (their latest message each), for a page opened late and for the report
HISTORY_POINTS = 4000  # the whole run's score curve per camera, decimated to at most this many points
REPORT_FRAMES = 3  # most anomalous frames kept per camera for the report
REPORT_FRAME_SIDE = 320  # their pictures' longer side, pixels


class Point(tuple):
    """One scored frame on the score timeline: (seq, frame, stream_time, wall_time, score, raw_score, threshold,
    event_open). ``score`` is the smoothed score events are raised on (None when the frame was skipped), ``threshold``
    None while the camera calibrates itself."""

    __slots__ = ()
    FIELDS = ("seq", "frame", "stream_time", "wall_time", "score", "raw_score", "threshold", "event_open")


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


class PeakHistory:
    """A whole run's score curve in at most ``max_points`` points: points are grouped into buckets of ``step``
    frames and each bucket keeps its highest score (so a short event's peak survives), its threshold and whether an
    event was open in it; when full, neighbouring buckets merge and ``step`` doubles."""

    def __init__(self, max_points: int = HISTORY_POINTS) -> None:
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points}")
        self.max_points = max_points
        self.step = 1
        self.points: list[list] = []  # [frame, stream_time, score, threshold, event_open]
        self._bucket: list | None = None
        self._count = 0

    @staticmethod
    def _merge(a: list, b: list) -> list:
        """Two neighbouring buckets as one: the higher score's frame, the later threshold, open if either was."""
        best = b if b[2] is not None and (a[2] is None or b[2] > a[2]) else a
        return [best[0], best[1], best[2], b[3], a[4] or b[4]]

    def add(self, frame: int, stream_time: float, score: float | None, threshold: float | None, open_: bool) -> None:
        point = [int(frame), round(float(stream_time), 4), _finite(score), _finite(threshold), bool(open_)]
        self._bucket = point if self._bucket is None else self._merge(self._bucket, point)
        self._count += 1
        if self._count >= self.step:
            self.points.append(self._bucket)
            self._bucket, self._count = None, 0
            if len(self.points) >= self.max_points:
                pairs = [self._merge(self.points[i], self.points[i + 1]) for i in range(0, len(self.points) - 1, 2)]
                self.points = pairs + (self.points[-1:] if len(self.points) % 2 else [])
                self.step *= 2

    def curve(self) -> list[list]:
        return self.points + ([self._bucket] if self._bucket is not None else [])


class Controls(Protocol):
    """What a viewer may change while the watch runs (the watch service provides it). Each method validates in the
    caller's thread (ValueError with the reason) and hands the change to the watch loop, which applies it before its
    next batch; none blocks on the loop."""

    def settings(self, camera: str) -> dict[str, Any]: ...

    def set_threshold(self, camera: str, value: float | None) -> dict[str, Any]: ...

    def set_rois(self, camera: str, rois: Sequence) -> dict[str, Any]: ...


@dataclass
class _Camera:
    points: deque
    history: PeakHistory
    top: Any | None
    latest: FrameScore | None = None
    latest_seq: int = 0
    frame_size: tuple[int, int] | None = None
    online: bool | None = None
    status_reason: str = ""


class LiveFeed:
    """The published state of one watch (see the module docstring). ``cameras``: the camera ids, in order;
    ``keep_frames``: also keep each camera's most anomalous frames' pictures (for the report)."""

    def __init__(self, cameras: Sequence[str], *, live_points: int = LIVE_POINTS, keep_frames: bool = False,
                 history_points: int = HISTORY_POINTS) -> None:
        from m2s2l_edge.report.frames import TopFrames

        self._lock = threading.Lock()
        self._seq = 0
        self._cams: dict[str, _Camera] = {
            c: _Camera(deque(maxlen=live_points), PeakHistory(history_points),
                       TopFrames(REPORT_FRAMES, gap=50, max_side=REPORT_FRAME_SIDE) if keep_frames else None)
            for c in cameras
        }
        self._messages: deque[tuple[int, dict]] = deque(maxlen=MESSAGES)
        self._events: OrderedDict[str, dict] = OrderedDict()
        self.health: Callable[[], dict[str, Any]] = lambda: {}
        self.controls: Controls | None = None
        self.info: dict[str, Any] = {}  # what the viewers show about the run (model, score, ...), set by the service
        self.closed = threading.Event()

    @property
    def cameras(self) -> list[str]:
        return list(self._cams)

    # --- the watch writes (its loop thread) -------------------------------------------------------------------

    def scored(self, fs: FrameScore, smoothed: float | None, event_open: bool, threshold: float | None) -> None:
        """One scored frame: its verdict, the smoothed score events are raised on, whether an event is open and the
        threshold in force (None while the camera calibrates itself)."""
        cam = self._cams[fs.camera]
        with self._lock:
            self._seq += 1
            cam.latest, cam.latest_seq = fs, self._seq
            cam.frame_size = (int(fs.frame.shape[1]), int(fs.frame.shape[0]))
            cam.points.append(Point((self._seq, int(fs.frame_index), round(float(fs.stream_time), 4),
                                     round(float(fs.wall_time), 3), _finite(smoothed), _finite(fs.score),
                                     _finite(threshold), bool(event_open))))
        cam.history.add(fs.frame_index, fs.stream_time, smoothed, threshold, event_open)
        if cam.top is not None and smoothed is not None and cam.top.wants(fs.frame_index, smoothed):
            cam.top.offer(fs.frame_index, smoothed, lambda: _report_images(fs),
                          info={"score": _finite(smoothed), "raw_score": _finite(fs.score),
                                "fused": _finite(fs.fused), "stream_time": round(float(fs.stream_time), 3)})

    def message(self, msg: dict) -> None:
        """An event, fault or status message as the sinks get it."""
        with self._lock:
            self._seq += 1
            self._messages.append((self._seq, msg))
            if msg.get("type") == "event" and msg.get("id"):
                self._events[msg["id"]] = msg
                self._events.move_to_end(msg["id"])
                while len(self._events) > EVENTS:
                    self._events.popitem(last=False)
            elif msg.get("type") == "status" and msg.get("camera") in self._cams:
                cam = self._cams[msg["camera"]]
                cam.online, cam.status_reason = bool(msg.get("online")), str(msg.get("reason") or "")

    # --- viewers read (any thread) ----------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        return self._seq

    def latest(self, camera: str) -> tuple[int, FrameScore | None]:
        """The newest scored frame of ``camera`` and its sequence number (0, None before the first)."""
        cam = self._cams[camera]
        with self._lock:
            return cam.latest_seq, cam.latest

    def frame_size(self, camera: str) -> tuple[int, int] | None:
        return self._cams[camera].frame_size

    def points(self, camera: str, after: int = 0) -> list[Point]:
        """Score points of ``camera`` newer than sequence number ``after``."""
        cam = self._cams[camera]
        with self._lock:  # from the newest back: O(new points), so the lock is held for microseconds
            out = []
            for p in reversed(cam.points):
                if p[0] <= after:
                    break
                out.append(p)
        out.reverse()
        return out

    def last_point(self, camera: str) -> Point | None:
        """The newest score point of ``camera`` (None before the first)."""
        cam = self._cams[camera]
        with self._lock:
            return cam.points[-1] if cam.points else None

    def messages(self, after: int = 0) -> list[tuple[int, dict]]:
        """Messages newer than sequence number ``after`` (the oldest may have left the ring)."""
        with self._lock:
            return [(s, m) for s, m in self._messages if s > after]

    def events(self, limit: int = 200) -> list[dict]:
        """The newest ``limit`` events, each as its latest message, newest last."""
        with self._lock:
            return list(self._events.values())[-limit:]

    def event(self, event_id: str) -> dict | None:
        with self._lock:
            return self._events.get(event_id)

    def status(self, camera: str) -> tuple[bool | None, str]:
        cam = self._cams[camera]
        return cam.online, cam.status_reason

    def curve(self, event_id: str, pad_s: float = 5.0) -> list[Point] | None:
        """The score points around an event, from ``pad_s`` before its first frame to ``pad_s`` after its last
        (to now while it is open); None when the event is unknown or its frames have left the live ring."""
        msg = self.event(event_id)
        if msg is None or msg.get("camera") not in self._cams:
            return None
        first, last = msg["first"].get("stream_time"), msg["last"].get("stream_time")
        if first is None:
            return None
        end = math.inf if msg.get("state") != "end" or last is None else last + pad_s
        cam = self._cams[msg["camera"]]
        with self._lock:
            pts = [p for p in cam.points if first - pad_s <= p[2] <= end]
        return pts or None

    def history(self, camera: str) -> list[list]:
        """The whole run's decimated score curve of ``camera``: [frame, stream_time, score, threshold, open]."""
        return self._cams[camera].history.curve()

    def top_frames(self, camera: str) -> list:
        top = self._cams[camera].top
        return top.frames() if top is not None else []


def _report_images(fs: FrameScore) -> dict[str, np.ndarray]:
    """A scored frame's pictures for the report: the frame with its error map over it, and the error map alone (both
    scaled down first, so keeping a frame costs the loop about a millisecond)."""
    from m2s2l_edge.report.images import VIDEO_VMAX, error_image, fit_width, heat_overlay

    frame = fit_width(fs.frame, REPORT_FRAME_SIDE)
    h, w = frame.shape[:2]
    return {"frame": frame, "overlay": heat_overlay(frame, fs.error_map, vmax=VIDEO_VMAX),
            "error": error_image(fs.error_map, (w, h), vmax=VIDEO_VMAX)}


UI_SOURCE = "set in the web view"


class WatchControls:
    """:class:`Controls` of a running :class:`~m2s2l_edge.watch.pipeline.Watch`: the threshold in force and the
    ROIs of each camera. Values are checked here by the rules the configuration file obeys (a finite threshold above
    typical normal and above the camera's off level; ROIs through :func:`~m2s2l_edge.watch.regions.parse_rois` and
    inside the frame), then applied by the loop (``Watch.call_soon``) from its next batch on."""

    def __init__(self, watch) -> None:
        self.watch = watch

    def _run(self, camera: str):
        run = self.watch.cameras.get(camera)
        if run is None:
            raise KeyError(f"no camera {camera!r}; cameras: {', '.join(self.watch.cameras)}")
        return run

    def settings(self, camera: str) -> dict[str, Any]:
        run = self._run(camera)
        tracker = run.tracker
        return {
            "camera": camera,
            "threshold": run.scorer.threshold,
            "threshold_source": run.scorer.threshold_source,
            "calibrated": run.scorer.calibrated,
            "off_threshold": None if tracker is None else tracker.cfg.off,
            "rois": [] if tracker is None else [[list(p) for p in poly] for poly in tracker.cfg.rois],
            "frame_size": list(run.frame_size) if run.frame_size else None,
        }

    def set_threshold(self, camera: str, value: float | None) -> dict[str, Any]:
        """Set the camera's threshold (None: back to what it was started with)."""
        run = self._run(camera)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"threshold must be a finite number above typical normal (0), got {value!r}")
            value = float(value)
            if run.tracker is not None:
                run.tracker.cfg.levels(value)  # ValueError when the camera's off level is not below it

        def apply() -> None:
            run.scorer.override = None if value is None else (value, UI_SOURCE)

        self.watch.call_soon(apply)
        return {"camera": camera, "threshold": value}

    def set_rois(self, camera: str, rois: Sequence) -> dict[str, Any]:
        """Score the camera from these ROIs (polygons of [x, y] source pixels; [] for the whole frame)."""
        from m2s2l_edge.watch.regions import check_rois_fit, parse_rois

        run = self._run(camera)
        if run.tracker is None:
            raise ValueError(f"camera {camera!r} raises no events, so it has no ROIs to set")
        parsed = parse_rois(list(rois))
        if run.frame_size is not None:
            check_rois_fit(parsed, *run.frame_size, camera)
        self.watch.call_soon(lambda: run.tracker.set_rois(parsed))
        return {"camera": camera, "rois": [[list(p) for p in poly] for poly in parsed]}


def camera_health(watch, telemetry) -> dict[str, dict[str, Any]]:
    """Each camera's health from what the watch measures: online, capture and scoring rates, drops, reconnects,
    capture-to-decision latency, the calibration's state and the threshold in force. Camera URLs redacted."""
    from m2s2l_edge.urls import redact_text

    measured = telemetry.summary()["cameras"]
    out = {}
    for name, run in watch.cameras.items():
        t = measured.get(name, {})
        stats = run.capture.stats
        latency = t.get("latency_ms") or {}
        out[name] = {
            "source": run.config.spec.shown,
            "kind": run.config.spec.kind,
            "online": bool(t.get("online", stats.online)),
            "capture_fps": t.get("capture_fps_now"),
            "processed_fps": t.get("processed_fps_now"),
            "captured": stats.captured,
            "scored": run.scored,
            "dropped_frames": t.get("dropped", 0),
            "dropped_clips": stats.dropped,
            "gaps": stats.gaps,
            "reconnects": stats.reconnects,
            "latency_p50_ms": latency.get("p50"),
            "latency_p95_ms": latency.get("p95"),
            "events": run.events,
            "faults": run.faults,
            **run.scorer.summary(),
            "last_error": redact_text(stats.last_error) if stats.last_error else None,
        }
    return out
