"""Video sources: one interface over a folder of frame images and a video file.

Every source returns frames as ``uint8`` RGB arrays of shape (H, W, 3), whatever is on disk: OpenCV decodes to BGR,
the conversion happens here once, so everything downstream (clip datasets, the synthetic generator, runtimes) speaks
RGB. Grayscale images (UCSD's ``.tif``) are expanded to three equal channels, an alpha channel is dropped and 16-bit
images are scaled to 8 bits.

Sources are cheap to construct and safe to pickle into DataLoader workers: a video file is probed once at
construction (opened, frame count read, closed); the ``cv2.VideoCapture`` used for decoding is opened lazily in the
process that reads, and neither it nor the decoded-frame cache is pickled.
"""

from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# Decoders a fork()ed child inherited from its parent, kept alive on purpose: freeing one in the child hangs in
# sws_freeContext (its slice threads exist only in the parent). Reproduced with a DataLoader worker; see
# VideoFileSource.close. Copy-on-write pages, so holding them costs the child nothing.
_INHERITED_DECODERS: list = []

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".m4v", ".wmv")

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: ``2.jpg`` before ``10.jpg``, ``Test2`` before ``Test10``."""
    parts = _DIGITS.split(name)
    # Alternating (text, number) pairs; the text part is case-folded so "Test" and "test" sort together.
    return tuple((0, int(p), "") if i % 2 else (1, 0, p.casefold()) for i, p in enumerate(parts) if p)


def natural_sorted(paths) -> list[Path]:
    """Paths sorted by :func:`natural_key` of their name."""
    return sorted((Path(p) for p in paths), key=lambda p: natural_key(p.name))


def _visible(path: Path) -> bool:
    # macOS archives ship "._0001.jpg" resource forks and ".DS_Store"; they are never frames.
    return not path.name.startswith(".")


def list_frame_files(folder: Path) -> list[Path]:
    """Frame images directly inside ``folder``, in natural order (hidden files skipped)."""
    return natural_sorted(
        p for p in Path(folder).iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in FRAME_EXTENSIONS
    )


def list_video_files(folder: Path) -> list[Path]:
    """Video files directly inside ``folder``, in natural order (hidden files skipped)."""
    return natural_sorted(
        p for p in Path(folder).iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in VIDEO_EXTENSIONS
    )


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An OpenCV-decoded image (gray, BGR or BGRA; 8 or 16 bit) as a contiguous uint8 RGB array (H, W, 3)."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ValueError(f"unsupported image dtype {image.dtype}; expected uint8 or uint16")
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))  # (H, W, 3)
    if image.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(image, 3, axis=2))  # (H, W, 3)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: Path) -> np.ndarray | None:
    """Decode one image file to RGB uint8 (H, W, 3), or ``None`` when the bytes are not a decodable image.

    Reads the bytes with numpy and decodes from memory: this works for non-ASCII paths and keeps OpenCV from
    logging its own warnings for unreadable files (we raise a better error instead).
    """
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        return None
    return to_rgb_uint8(image)


class VideoSource(ABC):
    """A finite sequence of RGB frames with a name.

    Frames are ``uint8`` arrays (H, W, 3), RGB. Indices are 0-based; ``read_range(a, b)`` returns frames ``a..b-1``.
    """

    name: str
    path: Path

    @abstractmethod
    def __len__(self) -> int:
        """Number of frames."""

    @property
    def num_frames(self) -> int:
        return len(self)

    @abstractmethod
    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as RGB uint8 (H, W, 3)."""

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start..stop-1`` stacked: (stop - start, H, W, 3) uint8 RGB."""
        self._check_range(start, stop)
        return np.stack([self.read(i) for i in range(start, stop)])  # (n, H, W, 3)

    def iter_frames(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Frames ``start..stop-1`` one at a time, each decoded once (video files are decoded sequentially)."""
        stop = len(self) if stop is None else stop
        self._check_range(start, stop)
        for i in range(start, stop):
            yield self.read(i)

    def close(self) -> None:
        """Release any open decoder; the source stays usable (it reopens on the next read). No-op by default."""
        return None

    def _check_index(self, index: int) -> int:
        n = len(self)
        if not isinstance(index, (int, np.integer)) or not 0 <= index < n:
            raise IndexError(f"frame index {index} out of range for video {self.name!r} with {n} frames")
        return int(index)

    def _check_range(self, start: int, stop: int) -> None:
        n = len(self)
        if not 0 <= start <= stop <= n:
            raise IndexError(f"frame range [{start}, {stop}) out of range for video {self.name!r} with {n} frames")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, frames={len(self)}, path={str(self.path)!r})"


class FrameFolderSource(VideoSource):
    """A folder of frame images (``.jpg``, ``.png``, ``.tif``, ...), ordered naturally by file name.

    Args:
        folder: the directory holding the frames (files directly inside it).
        name: the video's name; defaults to the folder name.
    """

    def __init__(self, folder: str | Path, name: str | None = None):
        self.path = Path(folder)
        self.name = name if name is not None else self.path.name
        if not self.path.is_dir():
            raise FileNotFoundError(f"frame folder not found: {self.path}")
        self.files = list_frame_files(self.path)
        if not self.files:
            raise ValueError(
                f"video {self.name!r} is empty: no frame images ({', '.join(FRAME_EXTENSIONS)}) in {self.path}"
            )

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> np.ndarray:
        index = self._check_index(index)
        path = self.files[index]
        frame = read_image(path)
        if frame is None:
            raise ValueError(
                f"video {self.name!r}: frame {index} ({path.name}) is unreadable or corrupt (full path: {path})"
            )
        return frame


class VideoFileSource(VideoSource):
    """A video file decoded with OpenCV.

    Decoding is sequential: reading frame ``i`` right after frame ``i - 1`` costs one decode. A backward jump
    reopens the file; a forward jump of more than ``seek_threshold`` frames seeks (``CAP_PROP_POS_FRAMES``) and
    checks the position it landed on, falling back to decoding forward from the start when the container cannot
    seek exactly. The last ``cache_size`` decoded frames are kept, so overlapping clips never decode a frame twice.

    The frame count is the container's (``CAP_PROP_FRAME_COUNT``), which is exact for the MJPG / XviD ``.avi`` files
    of the public data sets; with ``exact_count=True`` (or when the container reports none) the frames are counted
    by decoding the file once. If a file ends before its declared count, reading past the end raises a ValueError
    that names the video and suggests ``exact_count=True``.

    Args:
        path: the video file.
        name: the video's name; defaults to the file stem.
        exact_count: count frames by decoding instead of trusting the container.
        cache_size: decoded frames kept (least recently used evicted); at least 1.
        seek_threshold: forward jumps longer than this seek instead of decoding through.
    """

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        exact_count: bool = False,
        cache_size: int = 16,
        seek_threshold: int = 64,
    ):
        self.path = Path(path)
        self.name = name if name is not None else self.path.stem
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.cache_size = cache_size
        self.seek_threshold = seek_threshold
        if not self.path.is_file():
            raise FileNotFoundError(f"video file not found: {self.path}")
        self._cap = None
        self._cap_pid = 0  # process that opened _cap: a decoder inherited through fork() is never used
        self._pos = 0  # index of the frame the next cap.read() returns
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._num_frames = self._probe(exact_count)

    # --- construction ---------------------------------------------------------------------------------------------

    def _open(self):
        if self.path.stat().st_size == 0:
            raise ValueError(f"video {self.name!r} is empty: {self.path} has 0 bytes")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise ValueError(f"video {self.name!r} cannot be opened by OpenCV (corrupt or unsupported): {self.path}")
        return cap

    def _probe(self, exact_count: bool) -> int:
        cap = self._open()
        try:
            declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if exact_count or declared <= 0:
                count = 0
                while cap.grab():
                    count += 1
            else:
                count = declared
        finally:
            cap.release()
        if count <= 0:
            raise ValueError(f"video {self.name!r} is empty: no decodable frames in {self.path}")
        return count

    # --- pickling: workers reopen lazily ------------------------------------------------------------------------------

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cap"] = None
        state["_pos"] = 0
        state["_cache"] = OrderedDict()
        return state

    # --- reading ----------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._num_frames

    def close(self) -> None:
        if self._cap is not None:
            if self._cap_pid == os.getpid():
                self._cap.release()
            else:
                # Inherited through fork(): FFmpeg's scaler inside it owns threads that fork() did not copy, and
                # releasing (or merely freeing) it here waits for them forever. Keep it referenced instead.
                _INHERITED_DECODERS.append(self._cap)
            self._cap = None
            self._pos = 0

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        self._cache.move_to_end(index)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _rewind(self) -> None:
        self.close()
        self._cap = self._open()
        self._cap_pid = os.getpid()
        self._pos = 0

    def _seek(self, index: int) -> None:
        """Leave the decoder so that the next ``cap.read()`` returns frame ``index``."""
        if self._cap is None or index < self._pos:
            self._rewind()
        if index - self._pos > self.seek_threshold:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            landed = int(self._cap.get(cv2.CAP_PROP_POS_FRAMES))
            if landed == index:
                self._pos = index
                return
            # Inexact seek (some codecs land on a key frame): start over and decode forward, slow but correct.
            logger.debug("video %r: seek to %d landed on %d; decoding forward instead", self.name, index, landed)
            self._rewind()
        while self._pos < index:
            if not self._cap.grab():
                self._ended_early(self._pos)
            self._pos += 1

    def _ended_early(self, index: int):
        raise ValueError(
            f"video {self.name!r}: frame {index} could not be decoded (corrupt data, or the file ends before the "
            f"{len(self)} frames its header declares; try exact_count=True): {self.path}"
        )

    def _decode_next(self) -> np.ndarray:
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._ended_early(self._pos)
        self._pos += 1
        return to_rgb_uint8(frame)

    def read(self, index: int) -> np.ndarray:
        index = self._check_index(index)
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        if self._cap is not None and self._cap_pid != os.getpid():
            # Forked into a DataLoader worker with the parent's decoder: its file offset is shared with the parent,
            # so open a private one (close() parks the inherited decoder without freeing it).
            self.close()
        if self._cap is None or index != self._pos:
            self._seek(index)
        frame = self._decode_next()
        frame.setflags(write=False)  # shared through the cache: callers must copy before editing
        self._remember(index, frame)
        return frame


def extract_frames(source: VideoSource, folder: str | Path, ext: str = ".jpg", quality: int = 95) -> FrameFolderSource:
    """Write every frame of ``source`` to ``folder/<index:04d><ext>`` and return that folder as a source.

    Decoding a compressed video at random positions is slow (every jump seeks); training with shuffled clips reads
    much faster from frame folders, which is how MNAD prepares ShanghaiTech's training videos.
    """
    ext = ext if ext.startswith(".") else f".{ext}"
    if ext.lower() not in FRAME_EXTENSIONS:
        raise ValueError(f"unsupported frame extension {ext!r}; valid options: {', '.join(FRAME_EXTENSIONS)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(len(source) - 1)))
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext.lower() in (".jpg", ".jpeg") else []
    for i, frame in enumerate(source.iter_frames()):
        path = folder / f"{i:0{width}d}{ext}"
        if not cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), params):
            raise OSError(f"could not write {path}")
    return FrameFolderSource(folder, name=source.name)
