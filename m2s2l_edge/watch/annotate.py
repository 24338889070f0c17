"""Pictures of what the model saw: the error heat map over a frame, and an optional annotated output video.

The heat map is the per-pixel squared error of the frame prediction (``FrameScore.error_map``, model resolution),
resized to the frame and blended over it; the annotated video adds a strip below each frame with the recent
calibrated score, the threshold and the camera's state.

Shapes: frames are (H, W, 3) uint8 RGB at the source's resolution; error maps are (h, w) float32.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from pathlib import Path

import numpy as np

from m2s2l_edge.report.images import VIDEO_VMAX, encode_jpeg, heat_overlay

logger = logging.getLogger(__name__)

STRIP_HEIGHT = 64
# The error map's colour scale and JPEG encoding are the report package's (one scale for every picture); watch's
# callers keep importing them from here.
__all__ = ["AnnotatedVideo", "check_video", "encode_jpeg", "heat_overlay", "open_video_writer", "write_clip"]


def open_video_writer(path: str | os.PathLike, fps: float, size: tuple[int, int]):
    """A cv2.VideoWriter for ``path`` (mp4v for .mp4/.mov, MJPG for .avi) at ``size`` = (width, height).

    ValueError when OpenCV cannot open it (unwritable folder, unknown container).
    """
    import cv2

    path = Path(path)
    suffix = path.suffix.lower()
    codecs = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
    if suffix not in codecs:
        raise ValueError(f"video output {path}: unknown container {suffix!r}; use one of {', '.join(codecs)}")
    if not fps > 0:
        raise ValueError(f"video output {path}: fps must be > 0, got {fps}")
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*codecs[suffix]), float(fps), tuple(int(s) for s in size)
    )
    if not writer.isOpened():
        raise ValueError(f"cannot write video {path}: OpenCV could not open it (folder missing or not writable?)")
    return writer


def check_video(path: str | os.PathLike, frames: int) -> None:
    """Re-open a video just written and check that it holds ``frames`` frames and that the last one decodes; OSError
    otherwise. OpenCV's writer reports no write error: on a full disk it drops frames with a warning and closes a
    file without its index ("moov atom not found"), which only reading it back reveals."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise OSError(f"video {path} was not finished (it cannot be read back; a full disk?)")
        found = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if found != frames:
            raise OSError(f"video {path} holds {found} of its {frames} frames (a full disk?)")
        cap.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
        ok, _ = cap.read()
        if not ok:
            raise OSError(f"video {path}: its last frame cannot be decoded (a full disk?)")
    finally:
        cap.release()


def write_clip(path: str | os.PathLike, frames: list[np.ndarray], fps: float) -> Path:
    """Write RGB uint8 frames (all one size) as a small video, atomically: a temporary file beside ``path`` is read
    back (:func:`check_video`) and only then renamed over it, so a reader never sees half a clip and a clip the disk
    could not take is never published."""
    from m2s2l_edge.io import atomic_path

    path = Path(path)
    if not frames:
        raise ValueError(f"clip {path}: no frames to write")
    h, w = frames[0].shape[:2]
    # OpenCV picks the container from the extension, so the temporary name keeps it.
    with atomic_path(path, keep_suffix=True) as tmp:
        writer = open_video_writer(tmp, fps, (w, h))
        try:
            for f in frames:
                writer.write(np.ascontiguousarray(f[..., ::-1]))
        finally:
            writer.release()
        check_video(tmp, len(frames))
    return path


class AnnotatedVideo:
    """An output video of frame + heat map + score strip, one output frame per scored frame (``--video-out``).

    The file is written under a temporary name and renamed into place by :meth:`close` once it reads back whole
    (:func:`check_video`), so an interrupted run or a full disk never leaves a truncated file under the final name;
    the temporary of a killed run is removed by the next run that writes the same file. ``vmax`` fixes the heat
    map's colour scale (squared error at full red); ``history`` is how many scores the strip shows.

    Usage::

        video = AnnotatedVideo("out.mp4", fps=25.0)
        video.write(fs.frame, fs.error_map, score=fs.score, threshold=fs.threshold, label="cam0", active=True)
        video.close()
    """

    def __init__(self, path: str | os.PathLike, fps: float, vmax: float = VIDEO_VMAX, history: int = 250) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ValueError(f"cannot write video {self.path}: folder {self.path.parent} does not exist")
        if not fps > 0:
            raise ValueError(f"video output {self.path}: fps must be > 0, got {fps}")
        self.fps = float(fps)
        self.vmax = float(vmax)
        self._tmp: Path | None = None
        self._writer = None
        self._size: tuple[int, int] | None = None
        self._scores: deque[float] = deque(maxlen=int(history))
        self.frames = 0
        # Fail now (unknown container) rather than at the first frame.
        if self.path.suffix.lower() not in (".mp4", ".m4v", ".mov", ".avi", ".mkv"):
            raise ValueError(f"video output {self.path}: unknown container {self.path.suffix!r}; use .mp4 or .avi")

    def write(
        self,
        frame: np.ndarray,
        error_map: np.ndarray | None = None,
        score: float | None = None,
        threshold: float | None = None,
        label: str = "",
        active: bool = False,
    ) -> None:
        import cv2

        image = heat_overlay(frame, error_map, vmax=self.vmax) if error_map is not None else frame.copy()
        h, w = image.shape[:2]
        if self._writer is None:
            from m2s2l_edge.io import temporary_path

            self._size = (w, h + STRIP_HEIGHT)
            self._tmp = temporary_path(self.path, keep_suffix=True)
            try:
                self._writer = open_video_writer(self._tmp, self.fps, self._size)
            except BaseException:
                self._tmp.unlink(missing_ok=True)
                raise
        elif (w, h + STRIP_HEIGHT) != self._size:
            # A camera that changes resolution mid-stream: keep one output size.
            image = cv2.resize(image, (self._size[0], self._size[1] - STRIP_HEIGHT), interpolation=cv2.INTER_AREA)
            w, h = self._size[0], self._size[1] - STRIP_HEIGHT
        if score is not None and np.isfinite(score):
            self._scores.append(float(score))
        strip = self._strip(w, threshold, active)
        text = f"{label}  score {score:.2f}" if score is not None and np.isfinite(score) else label
        canvas = np.concatenate([image, strip], axis=0)  # (H + strip, W, 3)
        cv2.putText(canvas, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        self._writer.write(np.ascontiguousarray(canvas[..., ::-1]))
        self.frames += 1

    def _strip(self, width: int, threshold: float | None, active: bool) -> np.ndarray:
        import cv2

        strip = np.full((STRIP_HEIGHT, width, 3), (40, 0, 0) if active else (24, 24, 24), np.uint8)
        values = list(self._scores)
        limits = values + ([threshold] if threshold is not None and np.isfinite(threshold) else [])
        if not limits:
            return strip
        lo, hi = min(min(limits), 0.0), max(max(limits), 1e-6)
        span = max(hi - lo, 1e-6)

        def y_of(v: float) -> int:
            return int(round((STRIP_HEIGHT - 4) - (v - lo) / span * (STRIP_HEIGHT - 8)))

        if threshold is not None and np.isfinite(threshold):
            cv2.line(strip, (0, y_of(threshold)), (width - 1, y_of(threshold)), (255, 80, 80), 1)
        if len(values) >= 2:
            n = self._scores.maxlen or len(values)
            xs = np.linspace(width - 1 - (len(values) - 1) * (width - 1) / max(n - 1, 1), width - 1, len(values))
            pts = np.array([[int(x), y_of(v)] for x, v in zip(xs, values, strict=True)], np.int32)
            cv2.polylines(strip, [pts], False, (80, 255, 80), 1, cv2.LINE_AA)
        return strip

    def close(self) -> Path | None:
        """Finish the file, read it back and move it into place; returns its path (None when no frame was written).
        OSError when the file did not come out whole (the temporary is removed; the final name is untouched)."""
        if self._writer is None:
            return None
        from m2s2l_edge.io import publish

        self._writer.release()
        self._writer = None
        try:
            check_video(self._tmp, self.frames)
            publish(self._tmp, self.path)
        finally:
            self._tmp.unlink(missing_ok=True)
        return self.path
