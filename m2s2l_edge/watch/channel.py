"""From captured frames to the scheduler: the clip window of one camera and the channel of every camera's clips.

A clip is T+1 consecutive preprocessed frames of one camera (:class:`Clip`). A :class:`ClipWindow` per camera forms
them (emptied at every gap, so no clip spans one); the capture threads put them into the :class:`ClipChannel`, the
watch loop takes batches out, round robin over cameras.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Clip:
    """A scoreable clip: frames ``frame_index - T .. frame_index`` of one camera, preprocessed.

    clip: (T+1, 3, H, W) float32 in [-1, 1]; ``clip[:T]`` is the model input, ``clip[T]`` the target.
    frame: the target frame as captured, (H0, W0, 3) uint8 RGB.
    """

    camera: str
    frame_index: int
    stream_time: float
    wall_time: float
    capture_time: float
    clip: np.ndarray = field(repr=False)
    frame: np.ndarray = field(repr=False)



class ClipWindow:
    """The last T+1 preprocessed frames of one camera's current run (frames since its last gap), and the stride rule:
    a run's first clip ends at its frame T, then one every ``stride`` frames. The caller serialises access."""

    def __init__(self, clip_len: int, stride: int = 1) -> None:
        self.clip_len = clip_len
        self.stride = stride
        self._ring: deque[np.ndarray] = deque(maxlen=clip_len + 1)
        self._run_length = 0  # frames since the last gap

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        """Add one preprocessed frame (3, H, W); the clip (T+1, 3, H, W) it completes, or None."""
        self._ring.append(frame)
        self._run_length += 1
        T = self.clip_len
        ready = len(self._ring) > T and (self._run_length - T - 1) % self.stride == 0
        return np.stack(self._ring) if ready else None

    def reset(self) -> bool:
        """Forget the run (a gap: no clip may span it); True when it held frames."""
        had = bool(self._ring)
        self._ring.clear()
        self._run_length = 0
        return had


class ClipChannel:
    """Clips of every camera, waiting for the scheduler. One condition variable wakes the scheduler for any camera.

    Per camera a bounded deque: a file camera's reader blocks when its deque is full (no drops); a live camera's
    holds one clip, replaced by a newer one (counted as dropped).
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._queues: dict[str, deque[Clip]] = {}
        self._order: list[str] = []
        self._next = 0
        self.closed = False
        # Per camera: clips put in, and clips out again (taken by the scheduler, or replaced while waiting).
        self._put: dict[str, int] = {}
        self._out: dict[str, int] = {}

    def add_camera(self, camera: str) -> None:
        with self.cond:
            self._queues[camera] = deque()
            self._order.append(camera)
            self._put[camera] = self._out[camera] = 0

    def put_count(self, camera: str) -> int:
        """How many clips ``camera`` has put in so far (a mark for :meth:`settled`)."""
        with self.cond:
            return self._put.get(camera, 0)

    def settled(self, camera: str, mark: int) -> bool:
        """Whether every one of ``camera``'s first ``mark`` clips has left the channel (taken, or replaced by a newer
        one): the scheduler has them, so once it has scored its batch, nothing captured before the mark waits."""
        with self.cond:
            return self._out.get(camera, 0) >= mark

    def put_live(self, clip: Clip) -> bool:
        """Queue a live camera's ``clip`` in place of the one still waiting; True when one was replaced (dropped)."""
        with self.cond:
            q = self._queues[clip.camera]
            replaced = bool(q)
            self._out[clip.camera] += len(q)
            q.clear()
            q.append(clip)
            self._put[clip.camera] += 1
            self.cond.notify_all()
            return replaced

    def put_file(self, clip: Clip, *, limit: int, stop: threading.Event) -> bool:
        """Queue a file camera's ``clip``, waiting while ``limit`` of its clips wait; False if stopped meanwhile."""
        with self.cond:
            q = self._queues[clip.camera]
            while len(q) >= limit:
                if stop.is_set() or self.closed:
                    return False
                self.cond.wait(0.1)
            q.append(clip)
            self._put[clip.camera] += 1
            self.cond.notify_all()
            return True

    def pending(self) -> int:
        with self.cond:
            return sum(len(q) for q in self._queues.values())

    def take(self, max_items: int, max_wait_s: float, idle_wait_s: float = 0.1) -> list[Clip]:
        """Up to ``max_items`` clips, round robin over cameras (oldest first within one).

        Waits up to ``idle_wait_s`` for a first clip (returns [] then, so the caller can check for shutdown), then
        up to ``max_wait_s`` more while the batch is not full: the bounded wait of the dynamic batch.
        """
        out: list[Clip] = []
        with self.cond:
            if not any(self._queues.values()):
                self.cond.wait(idle_wait_s)
            deadline = time.monotonic() + max_wait_s
            while True:
                self._drain(out, max_items)
                remaining = deadline - time.monotonic()
                if not out or len(out) >= max_items or remaining <= 0:
                    break
                self.cond.wait(remaining)
            if out:
                self.cond.notify_all()  # room freed for waiting file readers
        return out

    def _drain(self, out: list[Clip], max_items: int) -> None:
        n = len(self._order)
        progressed = True
        while len(out) < max_items and progressed:
            progressed = False
            for k in range(n):
                if len(out) >= max_items:
                    break
                camera = self._order[(self._next + k) % n]
                q = self._queues[camera]
                if q:
                    out.append(q.popleft())
                    self._out[camera] += 1
                    progressed = True
            self._next = (self._next + 1) % max(n, 1)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
