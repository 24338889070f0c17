"""A watch as a service: outputs checked, calibrations loaded and matched, sinks opened, the loop run, every sink
flushed on the way out (also on SIGINT / SIGTERM). The CLI builds :class:`WatchSettings` and calls :func:`run_watch`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from m2s2l_edge.watch.calibration import Calibration, ModelIdentity, check_matches, identity_of, load
from m2s2l_edge.watch.cameras import CameraConfig
from m2s2l_edge.watch.pipeline import BatchReport, CameraParts, Watch, WatchHooks, WatchOptions
from m2s2l_edge.watch.scorer import resolve_scoring

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchSettings:
    """Everything a watch is asked to do besides which model runs it."""

    cameras: tuple[CameraConfig, ...]
    options: WatchOptions = WatchOptions()
    events: str | None = None  # JSON-lines file, or "-" for stdout
    webhook: str | None = None
    mqtt: str | None = None
    snapshots: Path | None = None
    video_out: Path | None = None
    metrics_port: int | None = None
    keep_mb: float | None = None  # snapshots and clips in total (None: the retention default)
    keep_hours: float | None = None
    scores: str | None = None  # per-frame CSV file, or "-" for stdout
    report: Path | None = None  # the end-of-run HTML report (written by the caller from its LiveFeed)

    def __post_init__(self) -> None:
        if self.video_out is not None and len(self.cameras) > 1:
            raise ValueError(f"--video-out annotates one camera, and {len(self.cameras)} are watched; give each "
                             "camera its own video_out in --config")
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            raise ValueError(f"--metrics-port must be in 1..65535, got {self.metrics_port}")
        from m2s2l_edge.watch.retention import Limit

        Limit.from_mb_hours(self.keep_mb, self.keep_hours, "retention")  # a bad value fails here, before any work
        if (self.keep_mb is not None or self.keep_hours is not None) and self.snapshots is None:
            raise ValueError("--keep-mb / --keep-hours bound what --snapshots DIR keeps; give --snapshots")


def check_output_file(path: Path, flag: str) -> None:
    """``path`` can be written: not a folder, its folder exists (or can be made) and is writable. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"cannot write {flag} {path}: permission denied")
    probe = path.parent if str(path.parent) else Path(".")
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"cannot write {flag} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {flag} {path}: {probe} is not writable")


def check_outputs(settings: WatchSettings) -> None:
    """Refuse unwritable outputs before any model is loaded, and make their folders (the events file is appended
    to, never replaced). Temporaries a killed run left beside the outputs (a half-written annotated video or clip)
    are removed now."""
    from m2s2l_edge.io import remove_stale_temporaries, sweep_temporaries
    from m2s2l_edge.watch.sinks import check_events_target, parse_mqtt_url, parse_webhook_url

    # Sink URLs are parsed now (their errors show them redacted); a broker is only contacted when the sinks open.
    if settings.webhook is not None:
        parse_webhook_url(settings.webhook)
    if settings.mqtt is not None:
        parse_mqtt_url(settings.mqtt)

    if settings.events is not None and settings.events != "-":
        check_output_file(Path(settings.events), "--events")
        check_events_target(settings.events)
        Path(settings.events).parent.mkdir(parents=True, exist_ok=True)
    if settings.scores is not None and settings.scores != "-":
        check_output_file(Path(settings.scores), "--scores")
        Path(settings.scores).parent.mkdir(parents=True, exist_ok=True)
    if settings.snapshots is not None:
        snap = Path(settings.snapshots)
        if snap.exists() and not snap.is_dir():
            raise NotADirectoryError(f"--snapshots {snap} is a file, not a folder")
        snap.mkdir(parents=True, exist_ok=True)
        if not os.access(snap, os.W_OK | os.X_OK):
            raise PermissionError(f"--snapshots {snap} is not writable")
        for tmp in sweep_temporaries(snap):
            logger.info("removed %s, left by an interrupted run", tmp)
    videos = [(c.camera, c.video_out) for c in settings.cameras if c.video_out is not None]
    if settings.video_out is not None:
        videos.append((settings.cameras[0].camera, settings.video_out))
    for camera, path in videos:
        check_output_file(Path(path), f"video_out of camera {camera!r}")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        for tmp in remove_stale_temporaries(path):
            logger.info("removed %s, left by an interrupted run", tmp)
    if settings.report is not None:
        check_output_file(Path(settings.report), "--report")
        Path(settings.report).parent.mkdir(parents=True, exist_ok=True)


def outputs_and_inputs(settings: WatchSettings, *, json_out: Path | None = None, config: Path | None = None,
                       calibration: Path | None = None, models: dict[str, Path | None] | None = None
                       ) -> tuple[dict, dict]:
    """Every file a watch writes and every file it reads, keyed by the option or camera that names it, for the check
    that no output lands on another output or on an input (a source video, the camera file, a calibration, the
    model: ``models`` maps the model's options to their paths)."""
    outputs: dict = {"--events": settings.events, "--scores": settings.scores, "--json": json_out,
                     "--video-out": settings.video_out, "--report": settings.report}
    inputs: dict = {"--config": config, "--calibration": calibration, **(models or {})}
    for cam in settings.cameras:
        if cam.video_out is not None:
            outputs[f"video_out of camera {cam.camera!r}"] = cam.video_out
        if cam.spec.kind == "file":
            inputs[f"--source of camera {cam.camera!r}"] = cam.spec.target
        if cam.calibration is not None:
            inputs[f"calibration of camera {cam.camera!r}"] = cam.calibration
    return outputs, inputs


def check_one_stdout(settings: WatchSettings, *, json_out: Path | str | None = None) -> None:
    """At most one output may go to stdout ('-'): the events, the scores table or the summary (``json_out``)."""
    flags = [flag for flag, target in (("--events", settings.events), ("--scores", settings.scores),
                                       ("--json", json_out)) if target is not None and str(target) == "-"]
    if len(flags) > 1:
        raise ValueError(f"{' and '.join(f'{f} -' for f in flags)} all want stdout; send all but one to files")


def check_before_model(settings: WatchSettings, calibration: Path | None = None) -> None:
    """Everything a watch can refuse without its model, checked before the model loads (a slow load, or a server
    connection): the outputs (their folders made), every calibration file, every camera's kind of source."""
    from m2s2l_edge.watch.feeds import check_openable

    check_outputs(settings)
    load_calibrations(settings, calibration)
    for cam in settings.cameras:
        check_openable(cam.spec)


def backend_options(kind: str) -> dict:
    """How a watch opens its backend beyond device and threads: a served model (``triton``) gets a long retry
    budget per batch, so that the cameras keep their windows through a server restart."""
    return {"run_retries": 1_000_000} if kind == "triton" else {}


def live_feed(settings: WatchSettings, *, ui: bool = False):
    """The :class:`~m2s2l_edge.watch.live.LiveFeed` a watch publishes to when something reads it (``ui``: the web
    view; ``settings.report``: the end-of-run report, which also keeps the most anomalous frames), else None."""
    if not ui and settings.report is None:
        return None
    from m2s2l_edge.watch.live import LiveFeed

    return LiveFeed([c.camera for c in settings.cameras], keep_frames=settings.report is not None)


def load_calibrations(settings: WatchSettings, default: Path | None) -> dict[str, tuple[Calibration, str] | None]:
    """Each camera's calibration (its own from --config, else ``--calibration``) and where it came from, parsed now:
    a bad file fails before the model loads."""
    cache: dict[Path, Calibration] = {}
    out: dict[str, tuple[Calibration, str] | None] = {}
    for cam in settings.cameras:
        path = cam.calibration or default
        if path is None:
            out[cam.camera] = None
            continue
        if path not in cache:
            cache[path] = load(path)
        out[cam.camera] = (cache[path], f"calibration file {path}")
    return out


def served_calibration(backend) -> tuple[Calibration, str] | None:
    """The calibration a served model carries (``serve triton-repo --calibration`` puts it into the model's
    configuration; the Triton backend reads it back), and where it came from; None where there is none."""
    data = (getattr(backend, "metadata", None) or {}).get("calibration")
    if not data:
        return None
    where = f"the calibration served with model {backend.metadata.get('served_model', '?')}"
    return Calibration.from_dict(data, where), where


class StoppedDuringStartup(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """A SIGINT / SIGTERM came before the watch loop ran (loading the model, opening the sinks). A BaseException, so
    that no ``except Exception`` on the way turns it into an error."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class StopSignals:
    """What :func:`stop_on_signals` yields: ``event`` is set by SIGINT / SIGTERM, ``seen`` lists them in order.

    Until :meth:`running` is called a signal also raises :class:`StoppedDuringStartup` in the main thread, so that
    start-up (a model loading, a broker being connected) ends at once instead of running to its end first; from
    then on the loop polls ``event`` and ends between two batches.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.seen: list[str] = []
        self._starting = True

    def handler(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        self.seen.append(name)
        self.event.set()
        if self._starting:
            self._starting = False
            raise StoppedDuringStartup(name)

    def running(self) -> None:
        self._starting = False


@contextlib.contextmanager
def stop_on_signals(interrupt_startup: bool = False) -> Iterator[StopSignals]:
    """SIGINT and SIGTERM set the yielded :class:`StopSignals`' event (and record which signal) instead of raising
    inside the loop, so the loop ends between two batches and every sink is flushed. ``interrupt_startup``: until
    ``running()`` a signal raises :class:`StoppedDuringStartup` (see there). The previous handlers come back
    afterwards."""
    stops = StopSignals()
    if not interrupt_startup:
        stops.running()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, stops.handler)
        except ValueError:  # not the main thread (a test calling run_watch from a thread): the caller stops it
            pass
    try:
        yield stops
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _open_sinks(settings: WatchSettings):
    from m2s2l_edge.watch import sinks as S

    sinkset = S.SinkSet()
    try:
        if settings.events is not None:
            sinkset.add(S.JsonlSink(settings.events))
        if settings.webhook is not None:
            sinkset.add(S.WebhookSink(settings.webhook))
        if settings.mqtt is not None:
            sinkset.add(S.MqttSink(settings.mqtt))
    except BaseException:
        sinkset.close()
        raise
    return sinkset


def run_watch(
    backend,
    settings: WatchSettings,
    *,
    model_path: str | os.PathLike | None = None,
    calibration: Path | None = None,
    stop: threading.Event | None = None,
    on_score: Callable | None = None,
    running: Callable[[], None] | None = None,
    live=None,
) -> dict:
    """Watch ``settings.cameras`` with ``backend`` until the files end or ``stop`` is set; returns the summary.
    ``running`` is called once everything is open, right before the loop starts (:meth:`StopSignals.running`).
    ``live``: a :class:`~m2s2l_edge.watch.live.LiveFeed` to publish to (the web view, the end-of-run report); it
    gets the camera health and the run's controls here.

    ValueError for bad input (a calibration of another model, no camera delivering a frame, an ROI outside the
    frame, an unreachable broker), RuntimeError when the backend fails.
    """
    from m2s2l_edge.watch.events import EventConfig, EventTracker
    from m2s2l_edge.watch.faults import FaultConfig, FaultDetector
    from m2s2l_edge.watch.telemetry import Telemetry

    check_outputs(settings)
    calibrations = load_calibrations(settings, calibration)
    served = served_calibration(backend) if any(c is None for c in calibrations.values()) else None
    if served is not None:
        calibrations = {name: cal or served for name, cal in calibrations.items()}
    scoring = resolve_scoring(backend, settings.options.score)
    identity: ModelIdentity = identity_of(scoring, model_path)
    for entry in calibrations.values():
        if entry is not None:
            check_matches(entry[0], identity, entry[1])
    event_configs = {c.camera: EventConfig.from_mapping(c.event_settings()) for c in settings.cameras}
    for cam in settings.cameras:
        cal, cfg = (calibrations[cam.camera] or (None,))[0], event_configs[cam.camera]
        if cal is not None and (cal.smoothing, cal.window) != (cfg.smoothing, cfg.smoothing_frames):
            logger.warning("camera %s smooths with %s over %d frames but its calibration's threshold assumes %s over "
                           "%d: the false-alarm rate it was fitted for does not hold", cam.camera, cfg.smoothing,
                           cfg.smoothing_frames, cal.smoothing, cal.window)

    media = open_media(settings)

    # Each camera's tracker and scorer as built here: the per-frame outputs (scores table, live view) read the
    # smoothed score, the open event and the threshold in force from them, not from inside the watch.
    built: dict[str, tuple[EventTracker, object]] = {}

    def camera_parts(cam: CameraConfig, scorer) -> CameraParts:
        tracker = EventTracker(cam.camera, event_configs[cam.camera], media_dir=settings.snapshots,
                               score_fn=scorer.roi_score, media=media)
        built[cam.camera] = (tracker, scorer)
        faults = FaultDetector(cam.camera, FaultConfig.from_mapping(dict(cam.faults)))
        return CameraParts(tracker=tracker, faults=faults, video=annotated_video(settings, cam))

    telemetry = Telemetry()
    for cam in settings.cameras:
        telemetry.add_camera(cam.camera)
    if media is not None:
        telemetry.attach("media", media.summary)
    if settings.metrics_port is not None:
        telemetry.serve(settings.metrics_port)
    sinkset = table = None
    try:
        sinkset = _open_sinks(settings)
        telemetry.attach("sinks", sinkset.summary)
        if settings.scores is not None:
            from m2s2l_edge.watch.sinks import ScoreTable

            table = ScoreTable(settings.scores)

        def on_message(msg: dict) -> None:
            sinkset.emit(msg)
            telemetry.event(msg)
            if live is not None:
                live.message(msg)

        def on_status(status) -> None:
            sinkset.status(status.camera, status.online,
                           {"reason": status.reason, "wall_time": status.wall_time,
                            "stream_time": round(status.stream_time, 6)})
            if live is not None:
                from m2s2l_edge.urls import redact_text
                from m2s2l_edge.watch.events import iso_time

                live.message({"type": "status", "camera": status.camera, "online": status.online,
                              "reason": redact_text(status.reason), "time": iso_time(status.wall_time)})

        def scored(fs) -> None:
            telemetry.processed(fs.camera, fs.capture_time)
            if table is not None or live is not None:
                tracker, scorer = built[fs.camera]
                active = bool(tracker.active)
                if table is not None:
                    table.write(fs, tracker.smoothed, scorer.threshold, active)
                if live is not None:
                    live.scored(fs, tracker.smoothed, active, scorer.threshold)
            if on_score is not None:
                on_score(fs)

        def on_batch(report: BatchReport) -> None:
            telemetry.backend_call(report.backend_seconds, report.clips)
            if table is not None:
                table.flush()
            if media is not None:
                media.expire()
            for name, n in report.dropped.items():
                telemetry.dropped(name, n)

        hooks = WatchHooks(score=scored, message=on_message, status=on_status, batch=on_batch,
                           frame=telemetry.captured,
                           capture_status=lambda st: telemetry.set_online(st.camera, st.online))
        watch = Watch(backend, settings.cameras, settings.options, calibrations=calibrations, identity=identity,
                      scoring=scoring, parts=camera_parts, hooks=hooks)
        check_levels(watch)
        if live is not None:
            from m2s2l_edge.watch.live import WatchControls, camera_health

            live.health = lambda: camera_health(watch, telemetry)
            live.controls = WatchControls(watch)
            live.info = {"model": watch.summary()["model"], "backend": getattr(backend, "name", "?"),
                         "replay": settings.options.replay}
        if running is not None:
            running()
        summary = watch.run(stop)
    finally:
        if table is not None:
            table.close()
        if sinkset is not None:
            sinkset.close()
        telemetry.close()
    summary["sinks"] = sinkset.summary()
    summary["media"] = media.summary() if media is not None else None
    summary["scores"] = table.summary() if table is not None else None
    summary["telemetry"] = telemetry.summary()
    return summary


def check_levels(watch: Watch) -> None:
    """ValueError, before the first frame, for a camera whose threshold in force is not above its off level (a
    ``--threshold`` or calibration below a camera's YAML ``off_threshold``)."""
    for name, run in watch.cameras.items():
        threshold = run.scorer.threshold
        if run.tracker is not None and threshold is not None:
            try:
                run.tracker.cfg.levels(threshold)
            except ValueError as e:
                raise ValueError(f"camera {name!r}: {e} (the threshold {threshold:g} comes from "
                                 f"{run.scorer.threshold_source})") from None


def annotated_video(settings: WatchSettings, cam: CameraConfig):
    """The :class:`~m2s2l_edge.watch.annotate.AnnotatedVideo` camera ``cam`` writes (its own ``video_out``, or
    ``--video-out`` for the first camera), None when it writes none."""
    from m2s2l_edge.watch.annotate import AnnotatedVideo

    path = cam.video_out or (settings.video_out if cam.camera == settings.cameras[0].camera else None)
    if path is None:
        return None
    fps = (cam.spec.fps or 25.0) / settings.options.stride
    return AnnotatedVideo(path, fps=fps)


def open_media(settings: WatchSettings):
    """The :class:`~m2s2l_edge.watch.retention.MediaStore` of ``--snapshots`` (None without it): the total limit
    from ``--keep-mb`` / ``--keep-hours`` (default: see the retention module), each camera's from its YAML."""
    if settings.snapshots is None:
        return None
    from m2s2l_edge.watch.retention import Limit, MediaStore

    cameras = {c.camera: Limit.from_mb_hours(c.keep_mb, c.keep_hours, f"camera {c.camera!r}")
               for c in settings.cameras}
    return MediaStore(settings.snapshots, Limit.from_mb_hours(settings.keep_mb, settings.keep_hours, "retention"),
                      cameras)
