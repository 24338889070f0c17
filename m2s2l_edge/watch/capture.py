"""Capture: one reader thread per camera, a ring buffer of the last T+1 frames, clips handed to the scheduler.

Why the ring buffer lives in the reader thread: a clip must be T+1 *consecutive* frames of one camera. The reader
sees every frame the camera delivers, so it keeps the window (each frame preprocessed once, at the model's
resolution and normalisation) and hands out complete clips; when inference falls behind, whole clips are dropped,
never frames inside one. After any gap (a failed read, a reconnect, a stall) the window is emptied, so a clip never
spans a gap; clips carry their camera, so a batch may mix cameras but a clip never does. The window and the channel
to the scheduler are :mod:`.channel`; this module reads the sources and supervises their connections.

Files and folders are read without drops (the reader waits for the scheduler); live sources keep only the newest
clip (the one not yet taken is replaced and counted in ``dropped``).

Live sources are read in a *connection* thread watched by the camera's supervisor thread: FFmpeg honours its read
timeout, but a driver or a GStreamer element may still block in ``read()``. When no frame arrives for
``stall_timeout_s`` the supervisor abandons that connection (its thread is a daemon, its late frames are ignored and
it releases its capture if it ever returns), reports the camera offline and reconnects with exponential backoff.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from m2s2l_edge.urls import redact_text
from m2s2l_edge.watch.channel import Clip, ClipChannel, ClipWindow
from m2s2l_edge.watch.feeds import Feed, SourceSpec, open_feed
from m2s2l_edge.watch.types import CameraStatus

logger = logging.getLogger(__name__)
# The status reason of a file (or any finite feed) that has delivered its last frame.
END_OF_STREAM = "end of stream"


@dataclass(frozen=True)
class CaptureConfig:
    """How cameras are read. Times in seconds."""

    clip_len: int  # T, from the model's metadata
    image_size: tuple[int, int]  # (H, W), from the model's metadata
    stride: int = 1  # score every K-th frame of a continuous run
    replay: bool = False  # files as fast as possible (never paced)
    queue_clips: int = 8  # clips a file camera may have waiting (bounds memory; the reader then waits)
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    stall_timeout_s: float = 15.0  # no frame for this long on an open connection: abandon it and reconnect
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_factor: float = 2.0
    # At a stop, how long a connection still inside OpenCV (opening, or a read) is waited for before it is left
    # behind (see abandoned_connections): a SIGTERM must not wait out an open timeout.
    stop_grace_s: float = 1.0

    def __post_init__(self) -> None:
        if self.clip_len < 1:
            raise ValueError(f"clip length T must be >= 1, got {self.clip_len}")
        if self.stride < 1:
            raise ValueError(f"--stride must be >= 1, got {self.stride}")
        if self.queue_clips < 1:
            raise ValueError(f"queue_clips must be >= 1, got {self.queue_clips}")
        for name in ("open_timeout_s", "read_timeout_s", "stall_timeout_s", "backoff_initial_s", "backoff_max_s",
                     "stop_grace_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def backoff(self, attempt: int) -> float:
        """Delay before reconnect attempt ``attempt`` (0-based): initial · factor^attempt, capped."""
        return min(self.backoff_max_s, self.backoff_initial_s * self.backoff_factor ** min(attempt, 60))


@dataclass
class CameraStats:
    """Counters of one camera (written by its threads, read by telemetry; ints and floats only)."""

    captured: int = 0  # frames delivered by the source
    clips: int = 0  # complete clips handed out
    dropped: int = 0  # clips replaced before the scheduler took them (live sources only)
    gaps: int = 0  # ring-buffer resets after a gap
    reconnects: int = 0
    online: bool = False
    ever_online: bool = False
    last_error: str = ""
    first_attempt_done: bool = False  # the first connection either delivered a frame or failed


class CameraCapture:
    """Reads one camera in background threads and puts its clips into ``channel``.

    ``on_status(CameraStatus)`` is called from the capture threads on every online / offline change; it must be
    quick and thread-safe (the pipeline puts the status on a queue). ``on_frame(camera, index, frame, stream_time,
    wall_time)`` (optional) sees every captured frame, for fault checks that need each one (a frozen feed), from
    the reader thread as well.
    """

    def __init__(
        self,
        spec: SourceSpec,
        config: CaptureConfig,
        channel: ClipChannel,
        on_status: Callable[[CameraStatus], None],
        *,
        on_frame: Callable[[str, int, np.ndarray, float, float], None] | None = None,
        feed_factory: Callable[[SourceSpec], Feed] | None = None,
    ) -> None:
        self.spec = spec
        self.config = config
        self.channel = channel
        self.on_status = on_status
        self.on_frame = on_frame
        self._factory = feed_factory or (lambda s: open_feed(s, open_timeout_s=config.open_timeout_s,
                                                             read_timeout_s=config.read_timeout_s))
        self.stats = CameraStats()
        self.stop_event = threading.Event()
        self.finished = threading.Event()  # a file read to its end, or the camera stopped
        self._lock = threading.Lock()
        self._generation = 0
        self._last_frame = time.monotonic()
        self._window = ClipWindow(config.clip_len, config.stride)
        self._frame_index = -1  # per camera, counted across reconnects (a file's index = its frame number)
        self._t0_mono: float | None = None
        self._thread: threading.Thread | None = None
        self._conn: threading.Thread | None = None
        self.fps: float | None = None
        channel.add_camera(spec.camera)

    @property
    def camera(self) -> str:
        return self.spec.camera

    # --- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        target = self._supervise if self.spec.live else self._read_file
        self._thread = threading.Thread(target=target, name=f"capture-{self.camera}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """Ask the threads to stop and wait for them (default: the stop grace plus 1 s at most; a connection still
        inside OpenCV after the grace is left behind, see :func:`abandoned_connections`)."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(self.config.stop_grace_s + 1.0 if timeout_s is None else timeout_s)
        self.finished.set()

    # --- files: every frame, no drops -----------------------------------------------------------------------------

    def _read_file(self) -> None:
        try:
            feed = self._factory(self.spec)
        except (OSError, ValueError) as e:
            self._fail_first(redact_text(str(e)))
            self.finished.set()
            return
        self.fps = feed.fps
        period = 0.0 if self.config.replay else 1.0 / feed.fps
        start = time.monotonic()
        try:
            while not self.stop_event.is_set():
                try:
                    frame = feed.read()
                except ValueError as e:  # a corrupt frame inside the file: a gap, then carry on
                    self._gap(f"unreadable frame: {e}")
                    self._frame_index += 1
                    continue
                if frame is None:
                    break
                if period:
                    # Paced like a camera: frame i is due at start + i / fps (no drift from slow iterations).
                    delay = start + (self._frame_index + 1) * period - time.monotonic()
                    if delay > 0 and self.stop_event.wait(delay):
                        break
                stream_time = (self._frame_index + 1) / feed.fps
                if not self._deliver(frame, stream_time, live=False, generation=self._generation):
                    break
        finally:
            feed.release()
            if self.stats.online:
                self._set_online(False, END_OF_STREAM if feed.ended else "stopped")
            self.stats.first_attempt_done = True
            self.finished.set()

    # --- live sources: supervisor + connection threads ------------------------------------------------------------

    def _supervise(self) -> None:
        attempt = 0
        while not self.stop_event.is_set():
            with self._lock:
                self._generation += 1
                generation = self._generation
                self._last_frame = time.monotonic()
            delivered = threading.Event()
            outcome: dict[str, str] = {}
            conn = threading.Thread(target=self._connection, args=(generation, delivered, outcome),
                                    name=f"connection-{self.camera}-{generation}", daemon=True)
            conn.start()
            self._conn = conn
            reason = self._watch(conn, generation)
            if self.stop_event.is_set():
                break
            # Library errors may quote the URL: what is logged, stored and sent carries no password.
            reason = redact_text(outcome.get("reason", reason))
            with self._lock:
                self._generation += 1  # whatever that connection still delivers is ignored from now on
            self._gap(reason)
            if self.stats.online:
                self._set_online(False, reason)
            if not self.stats.first_attempt_done:
                self._fail_first(reason)
            self.stats.last_error = reason
            if delivered.is_set():
                attempt = 0
            delay = self.config.backoff(attempt)
            attempt += 1
            logger.info("camera %s offline (%s); reconnecting in %.1f s", self.camera, reason, delay)
            if self.stop_event.wait(delay):
                break
            self.stats.reconnects += 1
        conn = self._conn
        if conn is not None and conn.is_alive():
            # A read of a live stream returns within a frame period and the connection then sees the stop flag; an
            # open (or a dead stream's read) takes up to its timeout, which a stop does not wait out.
            conn.join(self.config.stop_grace_s)
            if conn.is_alive():
                _abandon(conn)
                logger.info("camera %s: its connection is still inside OpenCV (opening or reading); left behind",
                            self.camera)
        if self.stats.online:
            self._set_online(False, "stopped")
        self.finished.set()

    def _watch(self, conn: threading.Thread, generation: int) -> str:
        """Wait while ``conn`` runs; the reason it ended, or 'stalled' once no frame came for stall_timeout_s."""
        # Opening may legitimately take up to open_timeout_s before the first frame.
        limit = self.config.stall_timeout_s + self.config.open_timeout_s
        while conn.is_alive() and not self.stop_event.is_set():
            conn.join(0.1)
            with self._lock:
                silent = time.monotonic() - self._last_frame
            if silent > limit:
                return f"no frame for {silent:.0f} s (read stalled)"
            if self.stats.ever_online and self._generation == generation:
                limit = self.config.stall_timeout_s
        return "connection ended"

    def _connection(self, generation: int, delivered: threading.Event, outcome: dict[str, str]) -> None:
        try:
            feed = self._factory(self.spec)
        except (ConnectionError, OSError, ValueError) as e:
            outcome["reason"] = f"open failed: {e}"
            return
        try:
            if self.fps is None:
                self.fps = feed.fps
            while not self.stop_event.is_set():
                frame = feed.read()
                if frame is None:
                    outcome["reason"] = "read failed or stream ended"
                    return
                if self._generation != generation:
                    return  # abandoned by the watchdog while blocked in read()
                now = time.monotonic()
                if self._t0_mono is None:
                    self._t0_mono = now
                delivered.set()
                if not self._deliver(frame, now - self._t0_mono, live=True, generation=generation):
                    return
        except Exception as e:  # noqa: BLE001 - a backend library error must end this connection, not the thread
            outcome["reason"] = f"read error: {type(e).__name__}: {e}"
        finally:
            feed.release()

    # --- shared -----------------------------------------------------------------------------------------------------

    def _deliver(self, frame: np.ndarray, stream_time: float, *, live: bool, generation: int) -> bool:
        from m2s2l_edge.data import preprocess_frame

        capture_time, wall = time.monotonic(), time.time()
        x = preprocess_frame(frame, self.config.image_size)  # (3, H, W)
        with self._lock:
            # Under the lock with the generation check: an abandoned connection that wakes up late must not
            # append to a ring the supervisor has just emptied.
            if generation != self._generation:
                return False
            self._last_frame = capture_time
            self._frame_index += 1
            index = self._frame_index
            window = self._window.push(x)
        self.stats.captured += 1
        if not self.stats.online:
            self._set_online(True, "first frame" if not self.stats.ever_online else "reconnected")
        self.stats.first_attempt_done = True
        if self.on_frame is not None:
            self.on_frame(self.camera, index, frame, stream_time, wall)
        if window is None:
            return True
        clip = Clip(self.camera, index, stream_time, wall, capture_time, window, frame)
        self.stats.clips += 1
        if not live:
            return self.channel.put_file(clip, limit=self.config.queue_clips, stop=self.stop_event)
        if self.channel.put_live(clip):
            self.stats.dropped += 1
        return True

    def _gap(self, reason: str) -> None:
        with self._lock:
            if self._window.reset():
                self.stats.gaps += 1
                logger.debug("camera %s: ring buffer reset (%s)", self.camera, reason)

    def _set_online(self, online: bool, reason: str) -> None:
        self.stats.online = online
        if online:
            self.stats.ever_online = True
        stream_time = 0.0
        if self._t0_mono is not None:
            stream_time = time.monotonic() - self._t0_mono
        elif self.fps:
            stream_time = max(self._frame_index + 1, 0) / self.fps
        self.on_status(CameraStatus(self.camera, online, reason, time.time(), stream_time))

    def _fail_first(self, reason: str) -> None:
        self.stats.last_error = reason
        self.stats.first_attempt_done = True


_ABANDONED: list[threading.Thread] = []
_ABANDONED_LOCK = threading.Lock()


def _abandon(thread: threading.Thread) -> None:
    with _ABANDONED_LOCK:
        _ABANDONED[:] = [t for t in _ABANDONED if t.is_alive()] + [thread]


def abandoned_connections() -> list[threading.Thread]:
    """Connection threads a stop left behind that are still inside OpenCV (an open or a read that has not timed
    out yet). A process must not let the interpreter finalise while one runs: the thread coming back from C++ then
    aborts the process. ``m2s2l-edge watch`` ends with ``os._exit`` after flushing everything when this is not
    empty; a program embedding the watch can join these threads (each ends within its open / read timeout)."""
    with _ABANDONED_LOCK:
        return [t for t in _ABANDONED if t.is_alive()]


def wait_first_frames(cameras: list[CameraCapture], timeout_s: float, stop: threading.Event | None = None) -> None:
    """Block until every camera delivered a frame or ended its first connection attempt, ``timeout_s`` passed, or
    ``stop`` was set (a SIGTERM while a camera is still opening must not wait for its open timeout)."""
    deadline = time.monotonic() + (math.inf if timeout_s is None else timeout_s)
    while time.monotonic() < deadline:
        if all(c.stats.first_attempt_done or c.finished.is_set() for c in cameras):
            return
        if stop is not None and stop.wait(0.05):
            return
        if stop is None:
            time.sleep(0.05)
