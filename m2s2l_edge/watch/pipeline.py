"""The watch loop: cameras → clips → one backend call per batch → calibrated scores → events, faults, sinks.

Threads: one capture thread per camera (plus a connection thread per live connection, see :mod:`.capture`); the
calling thread runs the scheduler and the model, so a backend that is not thread-safe is only ever called from one
thread. Clips of every camera that are ready go into one backend call (up to ``batch``; after the first clip the
scheduler waits at most ``max_wait_s`` for more: the dynamic batch's bounded wait).

Every stage is bounded: ring buffers of T+1 frames, per-camera clip queues (one clip for live cameras, a few for
files), and the event trackers' own buffers; memory does not grow with the length of the stream.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from m2s2l_edge.scoring.model import ModelScoring
from m2s2l_edge.scoring.stream import calibrated_scores, fit_stats
from m2s2l_edge.scoring.terms import TERMS, region_terms
from m2s2l_edge.scoring.video import score_fused
from m2s2l_edge.watch.calibration import (
    Calibration,
    ModelIdentity,
    check_matches,
    fit,
    stall_level,
    stall_note,
)
from m2s2l_edge.watch.cameras import CameraConfig
from m2s2l_edge.watch.capture import END_OF_STREAM, CameraCapture, CaptureConfig, wait_first_frames
from m2s2l_edge.watch.channel import ClipChannel
from m2s2l_edge.watch.regions import check_rois_fit
from m2s2l_edge.watch.scorer import ClipScorer, RawScore, resolve_scoring
from m2s2l_edge.watch.types import CameraStatus, FrameScore

logger = logging.getLogger(__name__)

WARMUP_FRAMES = 250  # scored frames a camera without --calibration calibrates itself on before raising events
# The threshold while a camera warms up: finite (hysteresis levels are derived from it) and out of any score's reach.
WARMUP_THRESHOLD = 1e9
# Scores a camera can be calibrated for: normalised by the camera's normal footage, frame by frame (eval's patch
# normalises per video and needs the whole video; stream is its causal version).
STREAM_SCORES = ("stream", "paper")
DEFAULT_SCORE = "stream"


@dataclass(frozen=True)
class WatchOptions:
    """How a watch runs (the CLI builds this from its options). Times in seconds. ``threshold``: the on level for
    every camera (calibrated-score units), over any camera's YAML threshold and any calibration's."""

    stride: int = 1
    replay: bool = False
    batch: int = 4
    max_wait_s: float = 0.02
    read_timeout_s: float = 5.0
    warmup_frames: int = WARMUP_FRAMES
    false_alarms_per_hour: float = 1.0
    queue_clips: int = 8
    score: str = DEFAULT_SCORE
    threshold: float | None = None
    self_calibrate: bool = True  # False (calibrate's own replay): an uncalibrated camera only yields its terms

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"--batch must be >= 1, got {self.batch}")
        if not self.read_timeout_s > 0:
            raise ValueError(f"read timeout must be > 0 s, got {self.read_timeout_s}")
        if not self.max_wait_s >= 0:
            raise ValueError(f"max_wait_s must be >= 0, got {self.max_wait_s}")
        if self.warmup_frames < 20:
            raise ValueError(f"warmup_frames must be >= 20, got {self.warmup_frames}")
        check_stream_score(self.score)
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"--threshold must be a finite number above typical normal (0), got {self.threshold}")

    def capture_config(self, model: ModelScoring) -> CaptureConfig:
        return CaptureConfig(
            clip_len=model.clip_len, image_size=model.image_size, stride=self.stride, replay=self.replay,
            queue_clips=self.queue_clips, open_timeout_s=2 * self.read_timeout_s, read_timeout_s=self.read_timeout_s,
            stall_timeout_s=3 * self.read_timeout_s,
        )

    @property
    def startup_timeout_s(self) -> float:
        # Open (2×) plus a stalled first read (3×) plus slack: by then the first attempt has surely ended.
        return 6 * self.read_timeout_s + 5.0


def default_batch(cameras: int) -> int:
    """Clips per backend call when not given: one per camera, and at least 4 (a few clips amortise a call)."""
    return max(4, cameras)


def check_stream_score(score: str) -> None:
    """ValueError unless ``score`` is one a camera can be calibrated for (:data:`STREAM_SCORES`)."""
    if score not in STREAM_SCORES:
        hint = ("; patch normalises each video by its whole length, stream is its version for a live camera"
                if score == "patch" else "")
        raise ValueError(f"--score {score!r} cannot score a stream; valid: {', '.join(STREAM_SCORES)}{hint}")


class CameraScorer:
    """Per-frame terms → calibrated score and the threshold in force, for one camera.

    With a calibration (a file, or the one served with the model): its score and threshold. Without one the camera
    calibrates itself on its first ``warmup_frames`` scored frames (assumed normal): until then its threshold is
    ``WARMUP_THRESHOLD`` (no event can start) and the score is relative to the frames seen so far; afterwards the fit
    is frozen, exactly as ``m2s2l-edge calibrate`` would have fitted those frames. The threshold in force:
    ``--threshold`` over the camera's YAML ``threshold`` over the calibration's.
    """

    def __init__(self, camera: CameraConfig, calibration: Calibration | None, options: WatchOptions,
                 scoring: ModelScoring, calibration_source: str = "") -> None:
        self.camera = camera.camera
        self.yaml_threshold = camera.on_level
        self.calibration = calibration
        self.calibration_source = calibration_source if calibration is not None else ""
        # A level set while the watch runs (the web view), over every other source: (threshold, where it came from).
        self.override: tuple[float, str] | None = None
        self.options = options
        self.scoring = scoring
        self._warmup: dict[str, list[float]] = {k: [] for k in TERMS}
        self._fps = 25.0

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    @property
    def threshold(self) -> float | None:
        """The on level in force (None while self-calibrating, when no event can start)."""
        if self.calibration is None:
            return None
        if self.override is not None:
            return float(self.override[0])
        if self.options.threshold is not None:
            return float(self.options.threshold)
        if self.yaml_threshold is not None:
            return float(self.yaml_threshold)
        return float(self.calibration.threshold)

    @property
    def threshold_source(self) -> str | None:
        if self.calibration is None:
            return None
        if self.override is not None:
            return self.override[1]
        if self.options.threshold is not None:
            return "--threshold"
        if self.yaml_threshold is not None:
            return f"camera {self.camera}'s threshold in --config"
        return self.calibration_source

    @property
    def state(self) -> str:
        """The calibration's state in words (for the summary)."""
        if self.calibration is None:
            return (f"warming up: self-calibration has {len(self._warmup['change'])} of {self.options.warmup_frames} "
                    "frames; no event can start before it is done")
        return self.calibration_source

    def score(self, terms: dict[str, float], fps: float | None) -> tuple[float, float]:
        """(calibrated score, threshold) of one frame from its terms."""
        if self.calibration is None and not self.options.self_calibrate:
            return 0.0, WARMUP_THRESHOLD
        if self.calibration is None:
            self._fps = fps or self._fps
            for k in TERMS:
                self._warmup[k].append(terms[k])
            n = len(self._warmup["change"])
            if n >= self.options.warmup_frames:
                self.calibration = fit(self._warmup, self.scoring, fps=self._fps / self.options.stride,
                                       false_alarms_per_hour=self.options.false_alarms_per_hour)
                seconds = self.calibration.stream_seconds
                self.calibration_source = f"self-calibration on its first {n} scored frames ({seconds:.0f} s)"
                logger.info("camera %s calibrated itself on its first %d scored frames: threshold %.2f (%s)",
                            self.camera, n, self.calibration.threshold, self.calibration.threshold_method)
                self._warmup = {k: [] for k in TERMS}
            else:
                so_far = {k: np.asarray(v) for k, v in self._warmup.items()}
                stats = fit_stats(so_far, self.scoring.score, self.scoring.normal_change)
                now = {k: np.asarray([terms[k]]) for k in TERMS}
                return float(calibrated_scores(now, stats, self.scoring.score)[0]), WARMUP_THRESHOLD
        return self.calibration.frame_score(terms), float(self.threshold)

    def roi_score(self, fs: FrameScore, mask: np.ndarray) -> float:
        """The calibrated score of one region of a frame (the event tracker's ``score_fn``)."""
        if self.calibration is None:
            return -math.inf  # warming up: no ROI can raise an event yet
        return self.calibration.frame_score(region_terms(dict(fs.terms), fs.error_map, mask, self.scoring.patch))

    def summary(self) -> dict:
        cal = self.calibration
        warning = ""
        if cal is not None:  # the frozen-picture check is made against the threshold in force (--threshold, YAML)
            level = stall_level(cal.score_config, cal.stats)
            footage = cal.warning.removesuffix(stall_note(cal.threshold, level)).removesuffix("; ")
            warning = "; ".join(w for w in (footage, stall_note(self.threshold, level)) if w)
        return {
            "calibration": self.state,
            "calibration_warning": warning or None,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
        }


def _ignore(*_args) -> None:
    """Every :class:`WatchHooks` field's default: nothing to report to."""


@dataclass(frozen=True)
class BatchReport:
    """One backend call as the loop saw it: what the service's telemetry needs, so that it reads nothing inside the
    watch. ``seconds``: the call plus its frames' handling (trackers, hooks); ``backend_seconds``: inside
    ``backend.run`` alone; ``dropped``: clips each camera's capture discarded (to stay current) since the previous
    report, only cameras that dropped any."""

    clips: int
    seconds: float
    backend_seconds: float
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WatchHooks:
    """What a :class:`Watch` reports while it runs: one callable per kind of news, each a no-op unless given.

    From the loop's thread: ``score(FrameScore)`` every scored frame (after its tracker saw it); ``message(dict)``
    every event / fault message the trackers and fault detectors produce (the sinks); ``status(CameraStatus)``
    every online / offline change; ``batch(BatchReport)`` after every backend call. From the capture threads (must
    be quick and thread-safe): ``frame(camera)`` every captured frame; ``capture_status(CameraStatus)`` every change
    as it happens (before that camera's next frame).
    """

    score: Callable[[FrameScore], None] = _ignore
    message: Callable[[dict], None] = _ignore
    status: Callable[[CameraStatus], None] = _ignore
    batch: Callable[[BatchReport], None] = _ignore
    frame: Callable[[str], None] = _ignore
    capture_status: Callable[[CameraStatus], None] = _ignore


@dataclass(frozen=True)
class CameraParts:
    """What watches one camera besides its scorer, each optional: ``tracker``, an :class:`.events.EventTracker`
    (``update(fs)`` / ``close(reason)`` → messages); ``faults``, a :class:`.faults.FaultDetector` (``check`` on every
    captured frame, in the capture thread; ``set_online`` on status changes; ``close``); ``video``, an
    :class:`.annotate.AnnotatedVideo` (``write`` every scored frame, ``close``)."""

    tracker: object | None = None
    faults: object | None = None
    video: object | None = None


@dataclass
class CameraRun:
    """Everything the loop keeps per camera."""

    config: CameraConfig
    capture: CameraCapture
    scorer: CameraScorer
    tracker: object | None = None
    detector: object | None = None
    video: object | None = None
    scored: int = 0
    events: int = 0
    faults: int = 0
    frame_size: tuple[int, int] | None = None  # (W, H) of the first frame
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    roi_checked: bool = False
    last_score: FrameScore | None = field(default=None, repr=False)
    video_error: str | None = None
    dropped_reported: int = 0  # capture drops already carried by a BatchReport


class Watch:
    """Runs cameras through one backend until every file ended or ``stop`` is set.

    ``parts(camera_config, camera_scorer)`` builds what watches each camera (:class:`CameraParts`: its tracker, fault
    detector, annotated video); without it a camera is only scored. ``hooks`` (:class:`WatchHooks`) hear what
    happens.
    """

    def __init__(
        self,
        backend,
        cameras: Sequence[CameraConfig],
        options: WatchOptions,
        *,
        calibrations: dict[str, tuple[Calibration, str] | None] | None = None,
        identity: ModelIdentity | None = None,
        scoring: ModelScoring | None = None,
        parts: Callable[[CameraConfig, CameraScorer], CameraParts] | None = None,
        hooks: WatchHooks | None = None,
    ) -> None:
        if not cameras:
            raise ValueError("no camera to watch")
        ids = [c.camera for c in cameras]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"camera id {dup[0]!r} is given twice")
        self.backend = backend
        self.model = scoring or resolve_scoring(backend, options.score)
        self.options = options
        self.scorer = ClipScorer(backend, self.model)
        self.channel = ClipChannel()
        # Capture threads → loop: status changes and fault messages, in the order they happened (unbounded, but
        # each entry is a few small dicts and the loop drains it before every batch).
        self._inbox: queue.Queue[tuple] = queue.Queue()
        self._waiting: list[tuple] = []  # status items whose camera still has clips from before them to score
        self.hooks = hooks or WatchHooks()
        calibrations = calibrations or {}
        capture_cfg = options.capture_config(self.model)
        self.cameras: dict[str, CameraRun] = {}
        for cam in cameras:
            cal, where = calibrations.get(cam.camera) or (None, "")
            if cal is not None and identity is not None:
                check_matches(cal, identity, where)
            scorer = CameraScorer(cam, cal, options, self.model, where)
            cap = CameraCapture(cam.spec, capture_cfg, self.channel, self._on_status, on_frame=self._on_frame)
            made = parts(cam, scorer) if parts is not None else CameraParts()
            run = CameraRun(cam, cap, scorer, tracker=made.tracker, detector=made.faults, video=made.video)
            self.cameras[cam.camera] = run
        self.started = 0.0
        self.stopped_by = ""

    # --- capture-thread hooks (each camera's detector is called under that camera's lock) ----------------------

    def _on_frame(self, camera: str, index: int, frame: np.ndarray, stream_time: float, wall_time: float) -> None:
        run = self.cameras[camera]
        if run.frame_size is None:
            run.frame_size = (int(frame.shape[1]), int(frame.shape[0]))
        self.hooks.frame(camera)
        if run.detector is None:
            return
        # Fault checks see every captured frame (a frozen stretch can hide between scored frames with --stride),
        # in the capture thread: ~1 ms a frame, in parallel across cameras, and no frame copied to the loop.
        with run.lock:
            messages = run.detector.check(frame, index, stream_time, wall_time)
        if messages:
            self._inbox.put(("messages", camera, messages))

    def _on_status(self, status: CameraStatus) -> None:
        run = self.cameras.get(status.camera)
        self.hooks.capture_status(status)
        messages: list[dict] = []
        # A file that ends is not a lost signal, nor is a camera we stopped ourselves; only a live camera going
        # offline on its own reports a signal_lost fault.
        if (run is not None and run.detector is not None and run.config.spec.live
                and not (not status.online and run.capture.stop_event.is_set())):
            with run.lock:
                messages = run.detector.set_online(status.online, status.wall_time, status.stream_time, status.reason)
        # The clips this camera captured before the status are still to be scored: the loop handles the status
        # after them (a tracker closed for a lost signal must not see frames from before the loss afterwards).
        self._inbox.put(("status", status, messages, self.channel.put_count(status.camera)))

    # --- the loop -------------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> dict:
        """Watch until every file ended or ``stop`` is set; returns the summary. Raises ValueError when no camera
        ever delivered a frame or a camera's ROI lies outside its frame, RuntimeError when the backend fails."""
        stop = stop or threading.Event()
        self.started = time.monotonic()
        for run in self.cameras.values():
            run.capture.start()
        try:
            wait_first_frames([r.capture for r in self.cameras.values()], self.options.startup_timeout_s, stop)
            self._drain_inbox()
            if stop.is_set():  # stopped while cameras were still opening: not a camera failure
                self.stopped_by = "signal"
            else:
                self._check_started()
                self._loop(stop)
        finally:
            for run in self.cameras.values():
                run.capture.stop_event.set()  # all at once: each may wait up to its grace period below
            for run in self.cameras.values():
                run.capture.stop()
            self._drain_inbox()
            self._close_all("shutdown")
        return self.summary()

    def _check_started(self) -> None:
        dead = [r for r in self.cameras.values() if not r.capture.stats.ever_online]
        if len(dead) == len(self.cameras):
            why = "; ".join(f"{r.config.camera} ({r.config.spec.shown}): {r.capture.stats.last_error or 'no frame'}"
                            for r in dead)
            raise ValueError(f"no camera delivered a frame: {why}")
        for r in dead:
            logger.warning("camera %s (%s) delivered no frame (%s); retrying in the background",
                           r.config.camera, r.config.spec.shown, r.capture.stats.last_error or "no frame")
        self._check_rois()

    def _loop(self, stop: threading.Event) -> None:
        while True:
            if stop.is_set():
                self.stopped_by = "signal"
                return
            self._drain_inbox()
            clips = self.channel.take(self.options.batch, self.options.max_wait_s)
            if not clips:
                if all(r.capture.finished.is_set() for r in self.cameras.values()) and not self.channel.pending():
                    self.stopped_by = "end of input"
                    return
                continue
            tic = time.perf_counter()
            raws = self.scorer.score(clips)
            for raw in raws:
                self._handle(raw)
            self.hooks.batch(BatchReport(len(clips), time.perf_counter() - tic, self.scorer.last_call_s,
                                         self._new_drops()))

    def _new_drops(self) -> dict[str, int]:
        """Clips each camera's capture dropped since the previous batch (the capture thread counts, this reads)."""
        out = {}
        for name, run in self.cameras.items():
            dropped = run.capture.stats.dropped
            if dropped > run.dropped_reported:
                out[name] = dropped - run.dropped_reported
                run.dropped_reported = dropped
        return out

    def _handle(self, raw: RawScore) -> None:
        clip = raw.clip
        run = self.cameras[clip.camera]
        if not run.roi_checked:
            self._check_roi(run, clip.frame)
        score, threshold = run.scorer.score(raw.terms, run.capture.fps)
        fused = float(score_fused({k: np.asarray([v]) for k, v in raw.terms.items()}, self.model.score)[0])
        fs = FrameScore(
            camera=clip.camera, frame_index=clip.frame_index, stream_time=clip.stream_time, wall_time=clip.wall_time,
            capture_time=clip.capture_time, psnr_app=raw.terms["psnr_app"], psnr_mot=raw.terms["psnr_mot"],
            fused=fused, score=score, threshold=threshold, error_map=raw.error_map, frame=clip.frame, terms=raw.terms,
        )
        run.scored += 1
        run.last_score = fs
        messages: list[dict] = []
        if run.tracker is not None:
            messages += run.tracker.update(fs)
        # After the tracker: a hook reading it sees this frame's smoothed score and whether an event is open.
        self.hooks.score(fs)
        self._emit(run, messages)
        if run.video is not None:
            active = bool(run.tracker.active) if run.tracker is not None else False
            run.video.write(fs.frame, fs.error_map, score=fs.score, threshold=fs.threshold, label=fs.camera,
                            active=active)

    def _emit(self, run: CameraRun, messages: list[dict]) -> None:
        for msg in messages:
            if msg.get("state") == "start":
                if msg.get("kind") == "anomaly":
                    run.events += 1
                else:
                    run.faults += 1
            self.hooks.message(msg)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the loop's thread before its next batch (a setting changed while the watch runs: the loop
        is the only thread that touches scorers and trackers)."""
        self._inbox.put(("call", fn))

    def _drain_inbox(self) -> None:
        """Handle what the capture threads and the user sent. A camera's status waits (in order, per camera) until
        the clips it captured before it have been scored."""
        waiting, self._waiting = self._waiting, []
        for item in waiting:
            self._status_or_wait(item)
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item[0] == "call":
                item[1]()
                continue
            if item[0] == "messages":
                self._emit(self.cameras[item[1]], item[2])
                continue
            self._status_or_wait(item)

    def _status_or_wait(self, item: tuple) -> None:
        camera, mark = item[1].camera, item[3]
        if any(w[1].camera == camera for w in self._waiting) or not self.channel.settled(camera, mark):
            self._waiting.append(item)
        else:
            self._status(item)

    def _status(self, item: tuple) -> None:
        _, status, fault_messages, _mark = item
        run = self.cameras[status.camera]
        logger.info("camera %s %s (%s)", status.camera, "online" if status.online else "offline", status.reason)
        self.hooks.status(status)
        messages: list[dict] = []
        if not status.online and run.tracker is not None and not run.capture.stop_event.is_set():
            # An event cannot outlive the signal that showed it: end it, reason "signal_lost", or "end_of_input"
            # where a file delivered its last frame (a camera we are stopping ends its events with the shutdown's
            # reason instead).
            messages += run.tracker.close("end_of_input" if status.reason == END_OF_STREAM else "signal_lost")
        self._emit(run, messages + fault_messages)

    def _check_rois(self) -> None:
        for run in self.cameras.values():
            if run.frame_size is not None and not run.roi_checked:
                check_rois_fit(run.config.roi, *run.frame_size, run.config.camera)
                run.roi_checked = True

    def _check_roi(self, run: CameraRun, frame: np.ndarray) -> None:
        check_rois_fit(run.config.roi, int(frame.shape[1]), int(frame.shape[0]), run.config.camera)
        run.roi_checked = True

    def _close_all(self, reason: str) -> None:
        self._drain_inbox()
        waiting, self._waiting = self._waiting, []  # stopped with clips unscored: the statuses go out now
        for item in waiting:
            self._status(item)
        for run in self.cameras.values():
            messages: list[dict] = []
            if run.tracker is not None:
                messages += run.tracker.close(reason)
            if run.detector is not None:
                with run.lock:
                    messages += run.detector.close(reason)
            self._emit(run, messages)
            if run.video is not None:
                try:
                    run.video.close()
                except OSError as e:  # the video did not come out whole (a full disk): the rest still finishes
                    run.video_error = str(e)
                    logger.error("camera %s: annotated video not written: %s", run.config.camera, e)
                run.video = None

    # --- results --------------------------------------------------------------------------------------------------

    def summary(self) -> dict:
        wall = time.monotonic() - self.started if self.started else 0.0
        cams = {}
        for name, run in self.cameras.items():
            s = run.capture.stats
            tracked = run.tracker.summary() if run.tracker is not None else {}
            cams[name] = {
                "source": run.config.spec.shown,
                "kind": run.config.spec.kind,
                "online": s.online,
                "captured_frames": s.captured,
                "scored_frames": run.scored,
                "dropped_clips": s.dropped,
                "gaps": s.gaps,
                "reconnects": s.reconnects,
                "events": run.events,
                "faults": run.faults,
                **run.scorer.summary(),
                "peak_score": tracked.get("peak_score"),
                "peak_frame": tracked.get("peak_frame"),
                "frames_above_threshold": tracked.get("frames_above_on"),
                "last_error": s.last_error or None,
                "video_out_error": run.video_error,
                "tracker": tracked or None,
            }
        return {
            "cameras": cams,
            "scored_frames": sum(r.scored for r in self.cameras.values()),
            "events": sum(r.events for r in self.cameras.values()),
            "faults": sum(r.faults for r in self.cameras.values()),
            "backend": {
                "name": getattr(self.backend, "name", "?"),
                "calls": self.scorer.calls,
                "seconds": self.scorer.backend_seconds,
                "mean_batch": (sum(r.scored for r in self.cameras.values()) / self.scorer.calls
                               if self.scorer.calls else None),
            },
            "model": {"preset": self.model.preset, "clip_len": self.model.clip_len,
                      "image_size": list(self.model.image_size), "lambda": self.model.lam,
                      "score": self.model.score_name},
            "wall_seconds": wall,
            "stopped_by": self.stopped_by or "error",
        }


def calibrate_footage(
    backend,
    sources: Sequence[str],
    *,
    score: str = DEFAULT_SCORE,
    model_path: str | None = None,
    false_alarms_per_hour: float = 1.0,
    stride: int = 1,
    batch: int | None = None,
    on_batch: Callable[[int, float], None] | None = None,
) -> Calibration:
    """Fit a :class:`Calibration` for ``score`` on recorded normal footage (files or frame folders), replayed through
    the same capture and scoring path as ``watch`` (so the terms are the ones a watch will see). ``batch``: clips
    per backend call (None: a watch's default for one camera)."""
    from m2s2l_edge.watch.calibration import identity_of
    from m2s2l_edge.watch.feeds import parse_source

    check_stream_score(score)
    cameras = []
    for i, text in enumerate(sources):
        spec = parse_source(text, f"footage{i}")
        if spec.live:
            raise ValueError(f"calibrate reads recorded footage (video files or frame folders), not a live "
                             f"{spec.kind} source ({spec.shown}); record normal footage first, e.g. "
                             "ffmpeg -i URL -t 600 -c copy normal.mp4")
        cameras.append(CameraConfig(spec))
    scoring = resolve_scoring(backend, score)
    terms: dict[str, dict[str, list[float]]] = {c.camera: {k: [] for k in TERMS} for c in cameras}

    def collect(fs: FrameScore) -> None:
        for k in TERMS:
            terms[fs.camera][k].append(fs.terms[k])

    options = WatchOptions(stride=stride, replay=True, batch=batch or default_batch(1), score=score,
                           self_calibrate=False)
    progress = (lambda report: on_batch(report.clips, report.seconds)) if on_batch is not None else _ignore
    watch = Watch(backend, cameras, options, scoring=scoring, hooks=WatchHooks(score=collect, batch=progress))
    watch.run()
    fps_values = {c: r.capture.fps for c, r in watch.cameras.items() if r.capture.fps}
    if len(set(round(f, 3) for f in fps_values.values())) > 1:
        logger.warning("calibration footage has different frame rates %s; using the first", fps_values)
    fps = next(iter(fps_values.values()), 25.0) / stride
    parts = [t for t in terms.values() if t["change"]]
    if not parts:
        raise ValueError(f"calibration footage gave no scored frame: every source is shorter than T + 1 = "
                         f"{scoring.clip_len + 1} frames")
    joined = {k: np.concatenate([np.asarray(t[k]) for t in parts]) for k in TERMS}
    return fit(joined, scoring, fps=fps, false_alarms_per_hour=false_alarms_per_hour,
               model=identity_of(scoring, model_path), sources=tuple(str(s) for s in sources),
               segments=[len(t["change"]) for t in parts])
