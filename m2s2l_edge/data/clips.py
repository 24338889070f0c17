"""Clips for future-frame prediction: ``clip_len`` past frames plus the target frame, as model-ready tensors.

A clip starting at frame ``s`` of a video holds frames ``s .. s + T`` (T = ``clip_len``): the first T are the model's
input and frame ``s + T`` is the target (the MNAD / FFP convention, docs/DESIGN.md §3). Frames are resized to the model
resolution (``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_LINEAR`` when enlarging), kept RGB (sources decode to
RGB, grayscale already expanded to three channels) and scaled from [0, 255] to [-1, 1].

Shapes:
    one clip:      (T+1, 3, H, W) float32 in [-1, 1]
    a batch:       (B, T+1, 3, H, W); ``batch[:, :T]`` is the runtime input (B, T, 3, H, W), ``batch[:, T]`` the target
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .sources import VideoSource

logger = logging.getLogger(__name__)


def _size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        h = w = int(image_size)
    else:
        size = tuple(int(s) for s in image_size)
        if len(size) != 2:
            raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
        h, w = size
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return h, w


def preprocess_frame(frame: np.ndarray, image_size: int | Sequence[int]) -> np.ndarray:
    """One RGB uint8 frame (H0, W0, 3) → float32 (3, H, W) in [-1, 1] at the model resolution ``image_size``."""
    h, w = _size_hw(image_size)
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)  # (H0, W0, 3)
    if frame.shape[:2] != (h, w):
        shrinking = frame.shape[0] * frame.shape[1] > h * w
        frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    out = frame.astype(np.float32).transpose(2, 0, 1)  # (3, H, W)
    return out * (2.0 / 255.0) - 1.0


class ClipDataset(Dataset):
    """All clips of ``clip_len + 1`` consecutive frames from a list of videos (training and random access).

    Index ``i`` maps to (video index, start frame) through :meth:`locate`; starts step by ``stride``. Videos shorter
    than ``clip_len + 1`` frames give no clips.

    Worker-safe: sources open their decoders lazily in the process that reads, and each process keeps its own LRU
    of the last ``cache_size`` preprocessed frames, so consecutive clips (overlapping by ``clip_len`` frames) share
    decodes. Use a sequential sampler, or shuffle over video-file sources only with care: a random jump into a
    compressed video costs a seek. For evaluation, :func:`iter_video_clips` decodes each frame exactly once.

    Args:
        videos: the sources (see :func:`.discover`).
        clip_len: T, the number of past frames (the model config's ``T``).
        image_size: model resolution, an int (square) or (H, W) (the model config's ``image_size``).
        stride: step between the start frames of consecutive clips.
        cache_size: preprocessed frames kept per process; 0 disables the cache, ``None`` keeps every frame (a small
            data set then costs one decode per frame for the whole run: 3·H·W·4 bytes per frame and process).

    Returns (``__getitem__``):
        (T+1, 3, H, W) float32 in [-1, 1]; ``[:T]`` the past frames, ``[T]`` the target.
    """

    def __init__(
        self,
        videos: Sequence[VideoSource],
        clip_len: int = 4,
        image_size: int | Sequence[int] = 256,
        stride: int = 1,
        cache_size: int | None = 32,
    ):
        if clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {clip_len}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if cache_size is not None and cache_size < 0:
            raise ValueError(f"cache_size must be >= 0 or None (unbounded), got {cache_size}")
        self.videos = list(videos)
        self.clip_len = int(clip_len)
        self.image_size = _size_hw(image_size)
        self.stride = int(stride)
        self.cache_size = None if cache_size is None else int(cache_size)
        # Clips per video: starts 0, stride, ... up to len - clip_len - 1 (the target must exist).
        counts = [max(0, (len(v) - self.clip_len - 1) // self.stride + 1) for v in self.videos]
        short = [v.name for v, c in zip(self.videos, counts, strict=True) if c == 0]
        if short:
            logger.warning("%d videos shorter than %d frames give no clips: %s", len(short), clip_len + 1, short)
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # (V+1,)
        if self._offsets[-1] == 0:
            raise ValueError(
                f"no clips: every video has fewer than clip_len + 1 = {clip_len + 1} frames "
                f"({len(self.videos)} videos given)"
            )
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(video index, start frame) of clip ``index``; the clip holds frames start .. start + clip_len."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        index %= len(self)
        v = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return v, int(index - self._offsets[v]) * self.stride

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # each worker builds its own
        return state

    def _frame(self, v: int, f: int) -> np.ndarray:
        if self._pid != os.getpid():  # forked into a worker: start a private cache
            self._cache, self._pid = OrderedDict(), os.getpid()
        key = (v, f)
        frame = self._cache.get(key)
        if frame is not None:
            self._cache.move_to_end(key)
            return frame
        frame = preprocess_frame(self.videos[v].read(f), self.image_size)  # (3, H, W)
        if self.cache_size is None or self.cache_size > 0:
            self._cache[key] = frame
            while self.cache_size is not None and len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return frame

    def target_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(last past frame, target) of clip ``index``, each (3, H, W): two decodes instead of the clip's T+1."""
        v, start = self.locate(index)
        return self._frame(v, start + self.clip_len - 1), self._frame(v, start + self.clip_len)

    def __getitem__(self, index: int) -> torch.Tensor:
        v, start = self.locate(index)
        clip = np.stack([self._frame(v, f) for f in range(start, start + self.clip_len + 1)])  # (T+1, 3, H, W)
        return torch.from_numpy(clip)


def iter_video_clips(
    video: VideoSource,
    clip_len: int = 4,
    image_size: int | Sequence[int] = 256,
    batch_size: int = 1,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Every clip of one video in order, for evaluation; each frame is decoded and preprocessed exactly once.

    Frames 0 .. T-1 (T = ``clip_len``) have no prediction: the first clip's target is frame T. So a video of N
    frames gives N - T scores, for frames T .. N-1, and the matching labels are ``labels[T:]`` (see
    :func:`.labels_for_scores`). A video with N <= T frames yields nothing.

    Yields:
        targets: int64 (B,), the frame index each clip predicts;
        clips:   (B, T+1, 3, H, W) float32 in [-1, 1] (the last batch may be smaller).
    """
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    size = _size_hw(image_size)
    window: deque[np.ndarray] = deque(maxlen=clip_len + 1)
    targets: list[int] = []
    clips: list[np.ndarray] = []
    for index, frame in enumerate(video.iter_frames()):
        window.append(preprocess_frame(frame, size))  # (3, H, W)
        if len(window) <= clip_len:
            continue
        targets.append(index)
        clips.append(np.stack(window))  # (T+1, 3, H, W)
        if len(clips) == batch_size:
            yield np.asarray(targets, dtype=np.int64), torch.from_numpy(np.stack(clips))  # (B, T+1, 3, H, W)
            targets, clips = [], []
    if clips:
        yield np.asarray(targets, dtype=np.int64), torch.from_numpy(np.stack(clips))  # (B, T+1, 3, H, W)
