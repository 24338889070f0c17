"""Camera sources: what a ``--source`` string means and how each kind is opened with OpenCV.

Kinds (``parse_source``):

- ``file``: a video file. Decoded through :class:`m2s2l_edge.data.VideoFileSource`, the reader ``eval`` uses, so
  ``watch --replay`` sees byte-identical frames. Paced at the file's frame rate unless replaying.
- ``folder``: a folder of frame images (:class:`m2s2l_edge.data.FrameFolderSource`), paced at ``fps`` (default 25).
- ``usb``: ``/dev/videoN`` or a bare index ``N`` (V4L2 on Linux).
- ``url``: ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http://``, ``https://``, through OpenCV's FFmpeg backend, over
  TCP, with open and read timeouts (FFmpeg's own ``read()`` otherwise blocks forever on a dead stream).
- ``csi``: ``csi://N``, a Jetson CSI sensor through an ``nvarguscamerasrc`` GStreamer pipeline.
- ``gstreamer``: any string holding ``!`` is taken as a GStreamer pipeline ending in ``appsink``.

pip's OpenCV wheels have FFmpeg but no GStreamer; ``csi`` and ``gstreamer`` sources then fail at start with one
line naming the fix (JetPack's OpenCV). Every feed returns RGB uint8 frames (H, W, 3), like the data readers.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m2s2l_edge.urls import redact, redact_text

logger = logging.getLogger(__name__)

KINDS = ("file", "folder", "usb", "url", "csi", "gstreamer")
LIVE_KINDS = ("usb", "url", "csi", "gstreamer")
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")
DEFAULT_FOLDER_FPS = 25.0
# Used when a container reports no frame rate (some MJPG .avi files, raw streams).
FALLBACK_FPS = 25.0

_USB_PATH = re.compile(r"^/dev/video(\d+)$")
_CSI = re.compile(r"^csi://(\d+)$")

GSTREAMER_FIX = (
    "this OpenCV has no GStreamer support (pip's opencv-python wheels never do); on a Jetson use JetPack's OpenCV: "
    "sudo apt-get install python3-opencv, and install m2s2l-edge with `pip install --no-deps` so pip does not "
    "shadow it (see export/jetson/README.md)"
)


@dataclass(frozen=True)
class SourceSpec:
    """One camera: its id, the kind of source, the target (path, device, URL or pipeline) and an optional fps.

    ``fps`` overrides the pacing rate of files and folders (None: the container's rate, 25 for folders); for live
    sources it is only the expected rate used when the stream reports none.
    """

    camera: str
    kind: str
    target: str
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"camera {self.camera!r}: fps must be > 0, got {self.fps}")

    @property
    def live(self) -> bool:
        return self.kind in LIVE_KINDS

    @property
    def shown(self) -> str:
        """The target as safe to print, log, store and send: a URL's password and secret query values are masked
        (a GStreamer pipeline may hold a URL too)."""
        return redact_text(self.target)


def parse_source(text: str, camera: str, fps: float | None = None) -> SourceSpec:
    """What ``text`` names: see the module docstring. Raises ValueError for something that is none of them."""
    text = str(text).strip()
    if not text:
        raise ValueError(f"camera {camera!r}: empty source")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if _CSI.match(text):
        return SourceSpec(camera, "csi", text, fps)
    if scheme in URL_SCHEMES:
        return SourceSpec(camera, "url", text, fps)
    if scheme:
        raise ValueError(f"camera {camera!r}: unsupported URL scheme {scheme!r} in {redact(text)}; valid: "
                         f"{', '.join(s + '://' for s in URL_SCHEMES)}, csi://N")
    if "!" in text:
        return SourceSpec(camera, "gstreamer", text, fps)
    if text.isdigit() or _USB_PATH.match(text):
        return SourceSpec(camera, "usb", text, fps)
    path = Path(text)
    if path.is_dir():
        return SourceSpec(camera, "folder", text, fps)
    if path.is_file():
        return SourceSpec(camera, "file", text, fps)
    raise ValueError(f"camera {camera!r}: source {redact_text(text)!r} is no file, folder, /dev/videoN, index, URL "
                     f"({', '.join(URL_SCHEMES)}), csi://N or GStreamer pipeline")


def gstreamer_available() -> bool:
    """Whether this cv2 was built with GStreamer (read from its build information)."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


def csi_pipeline(sensor: int, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    """The GStreamer pipeline for Jetson CSI sensor ``sensor``: NVMM capture, converted to BGR for appsink.

    ``drop=true max-buffers=1`` keeps appsink from queueing stale frames when the reader is busy.
    """
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
            "appsink drop=true max-buffers=1")


def check_openable(spec: SourceSpec) -> None:
    """Fail early, before any thread starts, for what can never work here (GStreamer kinds without GStreamer)."""
    if spec.kind in ("csi", "gstreamer") and not gstreamer_available():
        raise RuntimeError(f"camera {spec.camera!r} ({spec.kind} source): {GSTREAMER_FIX}")


class Feed:
    """An opened source: ``read()`` → RGB uint8 (H, W, 3), or None at the end of the stream / on a failed read.

    ``fps`` is the nominal frame rate; ``stream_time()`` the position in seconds of the frame last read (the
    container's timestamp for files, None where the source has none).
    """

    live = True
    fps: float = FALLBACK_FPS
    ended = False  # True once a file or folder has been read to its end (no reconnect will help)

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def release(self) -> None:
        return None


class FileFeed(Feed):
    """A video file or a folder of frames, read in order without drops (the data readers, shared with eval)."""

    live = False

    def __init__(self, spec: SourceSpec):
        from m2s2l_edge.data import FrameFolderSource, VideoFileSource

        if spec.kind == "folder":
            self.source = FrameFolderSource(spec.target, name=spec.camera)
            self.fps = spec.fps or DEFAULT_FOLDER_FPS
        else:
            self.source = VideoFileSource(spec.target, name=spec.camera)
            self.fps = spec.fps or _container_fps(spec.target)
        self._frames = self.source.iter_frames()

    def read(self) -> np.ndarray | None:
        try:
            return next(self._frames)
        except StopIteration:
            self.ended = True
            return None

    def release(self) -> None:
        self.source.close()


def _container_fps(path: str) -> float:
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()
    # Some containers report 0 or absurd rates (1000 for a few webcams' MJPG); fall back rather than pace wrongly.
    return fps if 0.5 <= fps <= 240 else FALLBACK_FPS


class CaptureFeed(Feed):
    """A live source through ``cv2.VideoCapture``: USB, URL (FFmpeg, TCP, timeouts), CSI or a GStreamer pipeline.

    Raises ConnectionError when the source cannot be opened (the capture thread retries with backoff).
    """

    def __init__(self, spec: SourceSpec, *, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0):
        import cv2

        self.spec = spec
        params: list[int] = []
        if spec.kind == "url":
            # FFmpeg reads its options from this variable at open time; TCP because RTSP over UDP loses packets on
            # busy networks (grey smeared frames) and passes few firewalls. A user's own setting is kept.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000)]
            self.cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
        elif spec.kind == "usb":
            m = _USB_PATH.match(spec.target)
            index = int(m.group(1) if m else spec.target)
            self.cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
        elif spec.kind == "csi":
            self.cap = cv2.VideoCapture(csi_pipeline(int(_CSI.match(spec.target).group(1))), cv2.CAP_GSTREAMER)
        else:
            self.cap = cv2.VideoCapture(spec.target, cv2.CAP_GSTREAMER)
        if not self.cap.isOpened():
            self.cap.release()
            raise ConnectionError(f"cannot open {spec.shown}")
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.5 <= fps <= 240 else (spec.fps or FALLBACK_FPS)

    def read(self) -> np.ndarray | None:
        from m2s2l_edge.data.sources import to_rgb_uint8

        ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        return to_rgb_uint8(frame)

    def release(self) -> None:
        self.cap.release()


def open_feed(spec: SourceSpec, *, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0) -> Feed:
    """Open ``spec``: a :class:`FileFeed` for files and folders, a :class:`CaptureFeed` for live kinds."""
    if spec.live:
        check_openable(spec)
        return CaptureFeed(spec, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s)
    return FileFeed(spec)
