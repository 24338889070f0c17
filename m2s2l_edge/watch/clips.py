"""An event's clip: the frames before, during and after it, kept in bounded memory and encoded off the loop.

A :class:`ClipRecorder` per camera keeps a ring of the last ``pre_roll_s + min_duration_s`` seconds of frames (scaled
to at most ``clip_width`` wide), so a clip can start before the frame that confirmed its event; it collects each open
clip's frames up to ``max_frames`` (whatever the event's length), and when the event has ended and its post-roll is
in, hands the clip to a :class:`ClipWriter`, which encodes it on a background thread: the watch loop never waits for
a video encoder. The event's end message waits with its clip, so the clip exists when the message arrives.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class EventClip:
    """One event's clip while it is collected: its file, frames and their stream times."""

    path: Path
    frames: list[np.ndarray]
    times: list[float]
    until: float = math.inf  # stream time at which the post-roll is complete
    end_msg: dict[str, Any] | None = None  # the event's end message, held back until the clip is written
    truncated: bool = False


@dataclass
class ClipRecorder:
    """The clips of one camera's events, from its frames to the files (see the module's text). Called from the thread
    that runs the camera's event tracker."""

    camera: str
    media: Any = None  # the media folder's retention.MediaStore (limits), None to keep every file
    clip_width: int = 640
    max_frames: int = 600
    pre_roll_s: float = 2.0
    horizon_s: float = 2.5  # how far back the ring reaches: the pre-roll before an event's first frame, and the
    # minimum duration between that first frame and the one that confirms the event
    _roll: deque = field(init=False, repr=False)
    _collecting: list[EventClip] = field(default_factory=list, init=False, repr=False)
    _writer: ClipWriter | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._roll = deque(maxlen=self.max_frames)

    def remember(self, frame: np.ndarray, t: float) -> None:
        """Keep frame ``frame`` of stream time ``t`` for the ring and every clip still collecting; hand finished clips
        to the writer."""
        import cv2

        if frame.shape[1] > self.clip_width:
            h = max(2, int(round(frame.shape[0] * self.clip_width / frame.shape[1])) // 2 * 2)
            frame = cv2.resize(frame, (self.clip_width, h), interpolation=cv2.INTER_AREA)
        else:
            frame = frame.copy()
        self._roll.append((t, frame))
        while self._roll and self._roll[0][0] < t - self.horizon_s:
            self._roll.popleft()
        for clip in self._collecting:
            if t <= clip.until:
                if len(clip.frames) < self.max_frames:
                    clip.frames.append(frame)
                    clip.times.append(t)
                else:
                    clip.truncated = True
        self.flush(t)

    def start(self, path: Path, first_time: float) -> EventClip:
        """A clip for an event whose first frame came at stream time ``first_time``: the pre-roll from the ring on."""
        t0 = first_time - self.pre_roll_s
        pre = [(t, f) for t, f in self._roll if t >= t0]
        clip = EventClip(path, [f for _, f in pre], [t for t, _ in pre])
        self._collecting.append(clip)
        return clip

    def flush(self, now: float, force: bool = False) -> None:
        """Hand every clip whose event ended and whose post-roll is complete at ``now`` to the writer; ``force``:
        every ended event's clip now, and drop the clips of events that never ended."""
        keep = []
        for clip in self._collecting:
            if clip.end_msg is not None and (force or now > clip.until):
                if self._writer is None:
                    self._writer = ClipWriter(self.camera, self.media)
                self._writer.submit(clip)
            elif force:
                logger.debug("camera %s: clip %s dropped (its event never ended)", self.camera, clip.path)
            else:
                keep.append(clip)
        self._collecting = keep

    def done(self) -> list[tuple[dict[str, Any], Exception | None]]:
        """The end messages of the clips written since the last call, each with the error that kept its clip from
        being written (None: written)."""
        return self._writer.done() if self._writer is not None else []

    def close(self) -> list[tuple[dict[str, Any], Exception | None]]:
        """Stop collecting, write every ended event's clip and wait for them (bounded); :meth:`done`'s pairs."""
        for clip in self._collecting:
            clip.until = -math.inf
        self.flush(math.inf, force=True)
        out = []
        if self._writer is not None:
            self._writer.join()
            out = self._writer.done()
            self._writer.stop()
            self._writer = None
        self._roll.clear()
        return out


class ClipWriter:
    """Encodes clips on one background thread so that the watch loop never waits for a video encoder."""

    def __init__(self, camera: str = "", media=None) -> None:
        self.camera = camera
        self.media = media
        self._todo: queue.Queue[EventClip | None] = queue.Queue()
        self._done: queue.Queue[tuple[dict[str, Any], Exception | None]] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="m2s2l-clips", daemon=True)
        self._thread.start()

    def submit(self, clip: EventClip) -> None:
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
