"""Run-time numbers of ``watch``: per-camera frame rates, drops, latency percentiles, backend time and batch sizes.

One :class:`Telemetry` per process is fed by the capture threads and the scoring loop (every method is thread-safe
and O(1)); memory is bounded whatever the run's length (latencies and backend times keep the last ``reservoir``
values, rates a sliding window of ``rate_window_s``). It serves a Prometheus endpoint on 127.0.0.1 from its own
registry (``serve``) and gives the final ``--json`` summary (``summary``).

Latency is capture-to-decision: from ``FrameScore.capture_time`` (``time.monotonic()`` when the frame was read) to
the moment its verdict was handed to the event tracker — queueing, batching, the backend call and post-processing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

INSTALL_WATCH = "pip install 'm2s2l-edge[watch]'"
PERCENTILES = (50, 95, 99)


def percentiles(values, ps=PERCENTILES) -> dict[str, float | None]:
    """{"p50": ..., "p95": ..., "p99": ...} of ``values`` (None when empty)."""
    arr = np.asarray(list(values), np.float64)
    if arr.size == 0:
        return {f"p{p}": None for p in ps}
    return {f"p{p}": float(np.percentile(arr, p)) for p in ps}


class _Rate:
    """Events per second over the last ``window`` seconds (timestamps kept only for that window)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self.times: deque[tuple[float, int]] = deque()
        self.total = 0
        self.start: float | None = None

    def add(self, now: float, n: int = 1) -> None:
        self.start = now if self.start is None else self.start
        self.times.append((now, n))
        self.total += n
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.times and self.times[0][0] < now - self.window:
            self.times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        if self.start is None:
            return 0.0
        # Until the window has filled, divide by the time the counter has existed.
        covered = max(min(self.window, now - self.start), 0.5)
        return sum(n for _, n in self.times) / covered


@dataclass
class _Camera:
    captured: _Rate
    processed: _Rate
    latency: deque
    dropped: int = 0
    online: bool = False
    reconnects: int = 0
    events: dict[str, int] = field(default_factory=dict)
    first_capture: float | None = None
    last_capture: float | None = None
    first_processed: float | None = None
    last_processed: float | None = None


class Telemetry:
    """Counters of one ``watch`` process. ``clock`` is ``time.monotonic`` unless a test gives its own."""

    def __init__(self, reservoir: int = 2048, rate_window_s: float = 10.0, clock=time.monotonic) -> None:
        if reservoir < 1:
            raise ValueError(f"reservoir must be >= 1, got {reservoir}")
        self.reservoir = reservoir
        self.rate_window_s = rate_window_s
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self._cams: dict[str, _Camera] = {}
        self._backend_s: deque[float] = deque(maxlen=reservoir)
        self._batch: deque[int] = deque(maxlen=reservoir)
        self._backend_calls = 0
        self._backend_total_s = 0.0
        self._backend_frames = 0
        self._backend_errors = 0
        self._batch_hist: dict[int, int] = {}
        self._server = None
        self._thread = None
        self.port: int | None = None
        self._attached: dict[str, Any] = {}

    def _cam(self, camera: str) -> _Camera:
        c = self._cams.get(camera)
        if c is None:
            c = _Camera(_Rate(self.rate_window_s), _Rate(self.rate_window_s), deque(maxlen=self.reservoir))
            self._cams[camera] = c
        return c

    # ------------------------------------------------------------------ feeding

    def add_camera(self, camera: str) -> None:
        with self._lock:
            self._cam(camera)

    def captured(self, camera: str, n: int = 1) -> None:
        """``n`` frames read from the camera."""
        now = self.clock()
        with self._lock:
            c = self._cam(camera)
            c.captured.add(now, n)
            c.first_capture = now if c.first_capture is None else c.first_capture
            c.last_capture = now

    def dropped(self, camera: str, n: int = 1) -> None:
        """``n`` frames the capture discarded to stay current (a live source faster than the scoring)."""
        with self._lock:
            self._cam(camera).dropped += n

    def processed(self, camera: str, capture_time: float, now: float | None = None) -> None:
        """One frame's decision made; ``capture_time`` is its ``time.monotonic()`` at capture."""
        now = self.clock() if now is None else now
        with self._lock:
            c = self._cam(camera)
            c.processed.add(now)
            c.latency.append(max(0.0, now - capture_time))
            c.first_processed = now if c.first_processed is None else c.first_processed
            c.last_processed = now

    def backend_call(self, seconds: float, batch_size: int, ok: bool = True) -> None:
        """One backend call of ``batch_size`` clips that took ``seconds``."""
        with self._lock:
            if not ok:
                self._backend_errors += 1
                return
            self._backend_calls += 1
            self._backend_total_s += seconds
            self._backend_frames += batch_size
            self._backend_s.append(seconds)
            self._batch.append(batch_size)
            self._batch_hist[batch_size] = self._batch_hist.get(batch_size, 0) + 1

    def set_online(self, camera: str, online: bool) -> None:
        with self._lock:
            c = self._cam(camera)
            if online and not c.online and c.first_capture is not None:
                c.reconnects += 1
            c.online = online

    def event(self, msg: dict[str, Any]) -> None:
        """Count an event / fault message at its start."""
        if msg.get("state") != "start":
            return
        with self._lock:
            c = self._cam(str(msg.get("camera", "")))
            kind = str(msg.get("kind", "unknown"))
            c.events[kind] = c.events.get(kind, 0) + 1

    def attach(self, name: str, summary) -> None:
        """Report another part's counters too: ``summary()`` returns its plain-number summary, read at scrape time
        (``"sinks"``: :meth:`.sinks.SinkSet.summary`; ``"media"``: :meth:`.retention.MediaStore.summary`)."""
        self._attached[name] = summary

    # ------------------------------------------------------------------ reading

    def summary(self) -> dict[str, Any]:
        """Everything as plain numbers (latencies and backend times in ms), for ``--json``."""
        now = self.clock()
        with self._lock:
            cams = {}
            for name, c in self._cams.items():
                cams[name] = {
                    "online": c.online,
                    "captured": c.captured.total,
                    "processed": c.processed.total,
                    "dropped": c.dropped,
                    "reconnects": c.reconnects,
                    "capture_fps": _mean_rate(c.captured.total, c.first_capture, c.last_capture),
                    "processed_fps": _mean_rate(c.processed.total, c.first_processed, c.last_processed),
                    "capture_fps_now": round(c.captured.rate(now), 3),
                    "processed_fps_now": round(c.processed.rate(now), 3),
                    "latency_ms": _ms(percentiles(c.latency)),
                    "latency_samples": len(c.latency),
                    "events": dict(c.events),
                }
            calls = self._backend_calls
            backend = {
                "calls": calls,
                "errors": self._backend_errors,
                "clips": self._backend_frames,
                "mean_ms": round(1e3 * self._backend_total_s / calls, 3) if calls else None,
                "time_ms": _ms(percentiles(self._backend_s)),
                "mean_batch": round(self._backend_frames / calls, 3) if calls else None,
                "batch_sizes": {str(k): v for k, v in sorted(self._batch_hist.items())},
            }
        return {"elapsed_s": round(now - self.started, 3), "cameras": cams, "backend": backend}

    # ------------------------------------------------------------------ Prometheus

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` (0 = any free port) from a registry of our own; returns the port.

        ValueError when the port is taken or invalid; RuntimeError when prometheus-client is not installed.
        """
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"metrics port must be an integer in 0..65535, got {port!r}")
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise RuntimeError(f"--metrics-port needs prometheus-client: {INSTALL_WATCH}") from None
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_Collector(self))
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as e:
            raise ValueError(f"cannot serve metrics on {host}:{port}: {e.strerror or e}") from None
        self._server, self._thread = server, thread
        self.port = int(server.server_port)
        logger.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def close(self) -> None:
        """Stop the metrics server (if any)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _mean_rate(n: int, first: float | None, last: float | None) -> float | None:
    if n < 2 or first is None or last is None or last <= first:
        return None
    return round((n - 1) / (last - first), 3)


def _ms(d: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (None if v is None else round(1e3 * v, 3)) for k, v in d.items()}


class _Collector:
    """Reads the counters at scrape time (nothing is updated per frame on the Prometheus side)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.t = telemetry

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        t = self.t
        now = t.clock()
        cap = CounterMetricFamily("m2s2l_frames_captured", "Frames read from the camera", labels=["camera"])
        proc = CounterMetricFamily("m2s2l_frames_processed", "Frames scored", labels=["camera"])
        drop = CounterMetricFamily("m2s2l_frames_dropped", "Frames discarded to stay current", labels=["camera"])
        cfps = GaugeMetricFamily("m2s2l_capture_fps", "Capture rate over the last window", labels=["camera"])
        pfps = GaugeMetricFamily("m2s2l_processed_fps", "Scoring rate over the last window", labels=["camera"])
        online = GaugeMetricFamily("m2s2l_camera_online", "1 while the camera delivers frames", labels=["camera"])
        lat = GaugeMetricFamily(
            "m2s2l_decision_latency_seconds",
            "Capture-to-decision latency percentiles over the last frames",
            labels=["camera", "quantile"],
        )
        events = CounterMetricFamily("m2s2l_events", "Events and faults started", labels=["camera", "kind"])
        with t._lock:
            for name, c in t._cams.items():
                cap.add_metric([name], c.captured.total)
                proc.add_metric([name], c.processed.total)
                drop.add_metric([name], c.dropped)
                cfps.add_metric([name], c.captured.rate(now))
                pfps.add_metric([name], c.processed.rate(now))
                online.add_metric([name], 1.0 if c.online else 0.0)
                for p, v in zip(PERCENTILES, percentiles(c.latency).values(), strict=True):
                    if v is not None:
                        lat.add_metric([name, str(p / 100)], v)
                for kind, n in c.events.items():
                    events.add_metric([name, kind], n)
            calls = CounterMetricFamily("m2s2l_backend_calls", "Backend calls")
            calls.add_metric([], t._backend_calls)
            errors = CounterMetricFamily("m2s2l_backend_errors", "Backend calls that failed")
            errors.add_metric([], t._backend_errors)
            busy = CounterMetricFamily("m2s2l_backend_seconds", "Time spent in backend calls")
            busy.add_metric([], t._backend_total_s)
            clips = CounterMetricFamily("m2s2l_backend_clips", "Clips scored by the backend")
            clips.add_metric([], t._backend_frames)
            call_t = GaugeMetricFamily(
                "m2s2l_backend_call_seconds",
                "Backend time per call, percentiles over the last calls",
                labels=["quantile"],
            )
            for p, v in zip(PERCENTILES, percentiles(t._backend_s).values(), strict=True):
                if v is not None:
                    call_t.add_metric([str(p / 100)], v)
            batch = GaugeMetricFamily("m2s2l_backend_batch_size", "Mean clips per backend call over the last calls")
            batch.add_metric([], float(np.mean(t._batch)) if t._batch else 0.0)
        yield from (cap, proc, drop, cfps, pfps, online, lat, events, calls, errors, busy, clips, call_t, batch)
        yield from _attached_metrics(t._attached)


# Sink counters: which field of a sink's summary counts which outcome of its messages.
_SINK_OUTCOMES = {"lines": "written", "sent": "written", "published": "written", "failed": "failed",
                  "dropped": "dropped"}


def _attached_metrics(attached: dict[str, Any]):
    """The sinks' and the media folder's counters, read from their summaries at scrape time."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    if "sinks" in attached:
        sinks = CounterMetricFamily("m2s2l_sink_messages", "Messages per sink and outcome (written, failed: the "
                                    "target refused or could not take it, dropped: a full queue or shutdown)",
                                    labels=["sink", "outcome"])
        for name, entry in attached["sinks"]().items():
            if name == "errors" or not isinstance(entry, dict):
                continue
            for field_name, outcome in _SINK_OUTCOMES.items():
                if isinstance(entry.get(field_name), int):
                    sinks.add_metric([name, outcome], entry[field_name])
        yield sinks
    if "media" in attached:
        media = attached["media"]()
        size = GaugeMetricFamily("m2s2l_media_bytes", "Bytes of snapshots and clips kept", labels=["camera"])
        files = GaugeMetricFamily("m2s2l_media_files", "Snapshots and clips kept", labels=["camera"])
        deleted = CounterMetricFamily("m2s2l_media_deleted", "Snapshots and clips deleted by the retention limits",
                                      labels=["camera"])
        skipped = CounterMetricFamily("m2s2l_media_skipped", "Snapshots and clips not written for lack of room",
                                      labels=["camera"])
        for camera, c in media["cameras"].items():
            size.add_metric([camera], c["bytes"])
            files.add_metric([camera], c["files"])
            deleted.add_metric([camera], c["deleted_files"])
            skipped.add_metric([camera], c["skipped"])
        limit = GaugeMetricFamily("m2s2l_media_limit_bytes", "Total size the snapshots and clips may take")
        limit.add_metric([], media["max_bytes"])
        yield from (size, files, deleted, skipped, limit)
