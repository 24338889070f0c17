"""A real-footage validation set built from OpenCV's ``vtest.avi`` (Debian package ``opencv-doc``).

``vtest.avi`` is a fixed campus camera (768×576, 10 fps, 795 frames) watching pedestrians cross a road and lawns.
Only **source frames 0–479** are ever decoded here: frames 480 and later are held out for an independent check that
this project never sees, so :func:`read_source_frames` stops its decoder at frame 480 whatever it is asked, and
counts the frames it pulled (the test suite checks the count with a counting reader).

What is built (MNAD layout, read by ``train --dataset custom`` and ``eval --dataset custom``)::

    <out>/training/frames/train/<index:04d>.jpg      source frames 0 .. 299, unchanged (normal)
    <out>/testing/frames/<NN_kind>/<index:04d>.jpg   test videos made from source frames 300 .. 479
    <out>/frame_labels.npy                           (1, N) uint8, test videos concatenated in natural order
    <out>/vtest_meta.json                            arguments, and per test video: kind, labelled frames,
                                                     the source frame shown at every output frame

Train and test never share a source frame (0–299 vs 300–479). The test videos all draw on the same 180 source
frames, each with one injected anomaly, so their normal stretches repeat one another; that is fine for a per-video
AUC and keeps training footage untouched. Anomaly kinds (``KINDS``), labelled on every frame where they act:

* ``fast`` — frame skipping: for 15–20 frames the video advances ``speed`` (3 or 4) source frames per frame;
* ``foreign_object`` — a composited object (a saturated, shaded box with a soft shadow) crossing the scene
  horizontally at 6–10 px per frame (at the stored 384 px width; pedestrians walk at about 3);
* ``appearance`` — a pedestrian recoloured to a saturated hue with a stripe texture, tracked through foreground
  blobs (difference from the median background of the training frames);
* ``wrong_direction`` — time reversal: the video plays backwards for ``duration`` frames, then forwards again (every
  pedestrian walks backwards; vtest has traffic in both directions, so this is the subtle kind);
* ``frozen`` — the camera stalls: one frame is repeated for ``duration`` frames, then the live feed resumes where
  real time has got to (the jump after a stall, as a stalled network camera shows it).

Deterministic: the same ``seed`` gives byte-identical frames and labels.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# Source frames from here on are held out: never decoded by this project.
HELD_OUT_FROM = 480
TRAIN_RANGE = (0, 300)
TEST_RANGE = (300, HELD_OUT_FROM)
KINDS = ("fast", "foreign_object", "appearance", "wrong_direction", "frozen")
STORE_SIZE = (384, 288)  # (W, H): half of the source, aspect kept; models resize to their own input
LABELS_FILE = "frame_labels.npy"
_FAST_EXTRA = 3 * 20  # source frames a fast event skips beyond its video's length, at most (speed 4, 20 frames)
META_FILE = "vtest_meta.json"
VTEST_PATHS = (
    Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"),
    Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi.gz"),
    Path("/usr/share/opencv4/samples/data/vtest.avi"),
)


def find_vtest(candidates: Sequence[Path] = VTEST_PATHS) -> Path | None:
    """The first existing ``vtest.avi`` (or ``.avi.gz``) of ``opencv-doc``, or None."""
    return next((Path(p) for p in candidates if Path(p).is_file()), None)


class _Capture:
    """``cv2.VideoCapture`` behind the two calls the reader needs (tests substitute a counting reader)."""

    def __init__(self, path: str) -> None:
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            raise ValueError(f"OpenCV cannot open {path} as a video (corrupt or unsupported)")

    def read(self):
        return self.cap.read()

    def release(self) -> None:
        self.cap.release()


def read_source_frames(
    path: str | Path,
    stop: int = HELD_OUT_FROM,
    *,
    size: tuple[int, int] = STORE_SIZE,
    reader: Callable[[str], object] = _Capture,
) -> list[np.ndarray]:
    """Source frames ``0 .. stop-1`` of ``path`` as RGB uint8 (H, W, 3) at ``size`` = (W, H).

    Decoding stops at ``stop``; a ``stop`` past :data:`HELD_OUT_FROM` is refused, so frames 480+ are never decoded.
    A ``.gz`` file is decompressed to a temporary file first. ``reader(path)`` must return an object with
    ``read() -> (ok, bgr_frame)`` and ``release()`` (``cv2.VideoCapture`` semantics).
    """
    if not 0 < stop <= HELD_OUT_FROM:
        raise ValueError(f"stop must lie in 1..{HELD_OUT_FROM} (vtest frames {HELD_OUT_FROM}+ are held out), "
                         f"got {stop}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vtest video not found: {path} (install it with: apt-get install -y opencv-doc)")
    with tempfile.TemporaryDirectory(prefix="vtest_") as tmp:
        video = path
        if path.suffix == ".gz":
            video = Path(tmp) / path.stem
            with gzip.open(path, "rb") as src, open(video, "wb") as dst:
                shutil.copyfileobj(src, dst)
        cap = reader(str(video))
        frames: list[np.ndarray] = []
        try:
            while len(frames) < stop:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    raise ValueError(f"{path} ended after {len(frames)} frames; {stop} are needed")
                small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                frames.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()
    assert len(frames) == stop <= HELD_OUT_FROM, (len(frames), stop)
    return frames


# --- the test videos ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VtestConfig:
    """What :func:`build_vtest_set` writes. ``per_kind`` test videos of each kind, ``video_len`` frames each."""

    seed: int = 0
    per_kind: int = 3
    video_len: int = 120
    kinds: tuple[str, ...] = KINDS
    train_range: tuple[int, int] = TRAIN_RANGE
    test_range: tuple[int, int] = TEST_RANGE
    size: tuple[int, int] = STORE_SIZE
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown anomaly kinds {unknown}; valid: {', '.join(KINDS)}")
        (a, b), (c, d) = self.train_range, self.test_range
        if not (0 <= a < b <= c < d <= HELD_OUT_FROM):
            raise ValueError(f"train {self.train_range} and test {self.test_range} ranges must be disjoint, in that "
                             f"order, within source frames 0..{HELD_OUT_FROM - 1}")
        if not 60 <= self.video_len <= d - c:
            raise ValueError(f"video_len must lie in 60..{d - c} (the test range), got {self.video_len}")
        if "fast" in self.kinds and self.video_len + _FAST_EXTRA > d - c:
            raise ValueError(f"a fast video of {self.video_len} frames skips through {self.video_len + _FAST_EXTRA} "
                             f"source frames; the test range {self.test_range} holds {d - c}")
        if self.per_kind < 1:
            raise ValueError(f"per_kind must be >= 1, got {self.per_kind}")


@dataclass
class TestVideo:
    name: str
    kind: str
    sources: list[int]  # source frame shown at each output frame
    labels: np.ndarray  # (video_len,) uint8
    params: dict = field(default_factory=dict)


def _timeline(kind: str, rng: np.random.Generator, n: int, lo: int, hi: int) -> tuple[list[int], range, dict]:
    """Source index per output frame, the event's frames and its parameters, for the time-warping kinds."""
    if kind == "fast":
        speed, dur = int(rng.integers(3, 5)), int(rng.integers(15, 21))
        start = int(rng.integers(20, n - dur - 10))
        span = n + (speed - 1) * dur
        s0 = int(rng.integers(lo, hi - span + 1))
        src, p = [], s0
        for i in range(n):
            src.append(p)
            p += speed if start <= i + 1 < start + dur else 1  # frames start .. start+dur-1 arrive by a jump
        return src, range(start, start + dur), {"speed": speed}
    if kind == "wrong_direction":
        dur = int(rng.integers(20, 31))
        start = int(rng.integers(dur + 5, n - dur - 10))
        s0 = int(rng.integers(lo, hi - n + 1))
        src = [s0 + i for i in range(start)]
        turn = src[-1]
        src += [turn - 1 - j for j in range(dur)]  # backwards, one frame at a time
        p = src[-1]
        while len(src) < n:
            p += 1
            src.append(p)
        return src, range(start, start + dur), {}
    if kind == "frozen":
        dur = int(rng.integers(15, 31))
        start = int(rng.integers(20, n - dur - 10))
        s0 = int(rng.integers(lo, hi - n + 1))
        src = [s0 + (start - 1 if start <= i < start + dur else i) for i in range(n)]
        return src, range(start, start + dur), {}
    s0 = int(rng.integers(lo, hi - n + 1))
    return [s0 + i for i in range(n)], range(0), {}


def _sprite(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A shaded box with a dark rim: colour (h, w, 3) float32 and soft alpha (h, w) float32."""
    w, h = int(rng.integers(20, 33)), int(rng.integers(12, 21))
    hue = int(rng.integers(0, 180))
    hsv = np.array([[[hue, 230, 240]]], np.uint8)
    base = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    shade = np.linspace(1.1, 0.6, h, dtype=np.float32)[:, None, None]  # lit from above
    color = np.clip(base[None, None, :] * shade * np.ones((h, w, 1), np.float32), 0, 255)
    color[[0, -1], :] *= 0.4
    color[:, [0, -1]] *= 0.4
    alpha = np.zeros((h + 4, w + 4), np.float32)
    alpha[2:-2, 2:-2] = 1.0
    alpha = cv2.GaussianBlur(alpha, (5, 5), 1.0)[2:-2, 2:-2]
    return color, alpha


def _paste(frame: np.ndarray, color: np.ndarray, alpha: np.ndarray, x: int, y: int, opacity: float = 1.0) -> bool:
    """Alpha-blend ``color`` into ``frame`` (in place) with its top-left corner at (x, y); True if any of it shows."""
    fh, fw = frame.shape[:2]
    h, w = alpha.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, fw), min(y + h, fh)
    if x0 >= x1 or y0 >= y1:
        return False
    a = (alpha[y0 - y:y1 - y, x0 - x:x1 - x] * opacity)[..., None]
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(region * (1 - a) + color[y0 - y:y1 - y, x0 - x:x1 - x] * a, 0, 255).astype(np.uint8)
    return True


def _foreign_object(frames: list[np.ndarray], rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray, dict]:
    n = len(frames)
    fh, fw = frames[0].shape[:2]
    color, alpha = _sprite(rng)
    h, w = alpha.shape
    speed = float(rng.uniform(6.0, 10.0))
    leftwards = bool(rng.integers(0, 2))
    y = int(rng.uniform(0.35, 0.85) * fh)
    crossing = int(np.ceil((fw + w) / speed))
    start = int(rng.integers(10, max(11, n - crossing - 5)))
    shadow = np.zeros((h, w, 3), np.float32)
    out, labels = [f.copy() for f in frames], np.zeros(n, np.uint8)
    for i in range(start, n):
        travelled = (i - start) * speed
        x = int(round(fw - travelled)) if leftwards else int(round(-w + travelled))
        _paste(out[i], shadow, alpha, x + 3, y + h // 2, opacity=0.45)  # a shadow on the ground, below-right
        if _paste(out[i], color, alpha, x, y):
            labels[i] = 1
        elif i > start:
            break
    return out, labels, {"speed_px": speed, "leftwards": leftwards, "y": y, "size": [w, h]}


def _median_background(frames: Sequence[np.ndarray]) -> np.ndarray:
    return np.median(np.stack(frames[::3]), axis=0).astype(np.uint8)  # (H, W, 3)


def _blobs(frame: np.ndarray, background: np.ndarray, min_area: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Foreground blobs: (mask (H, W) bool, centroid (2,)) with at least ``min_area`` pixels."""
    diff = np.abs(frame.astype(np.int16) - background.astype(np.int16)).max(axis=2)
    mask = (diff > 35).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    count, comp, stats, cents = cv2.connectedComponentsWithStats(mask)
    return [(comp == k, cents[k]) for k in range(1, count) if stats[k, cv2.CC_STAT_AREA] >= min_area]


def _appearance(frames: list[np.ndarray], background: np.ndarray,
                rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """Recolour one tracked pedestrian blob for up to 40 frames (a saturated hue with horizontal stripes)."""
    n = len(frames)
    hue = int(rng.integers(0, 180))
    stripe = int(rng.integers(3, 6))
    for _ in range(20):  # try start frames until a blob can be followed for 15+ frames
        start = int(rng.integers(10, n - 40))
        blobs = _blobs(frames[start], background, min_area=60)
        if not blobs:
            continue
        mask, centre = blobs[int(rng.integers(0, len(blobs)))]
        track = [(start, mask)]
        for i in range(start + 1, min(n, start + 40)):
            near = [(np.linalg.norm(c - centre), m, c) for m, c in _blobs(frames[i], background, 60)]
            near = [t for t in near if t[0] < 12.0]
            if not near:
                break
            _, mask, centre = min(near, key=lambda t: t[0])
            track.append((i, mask))
        if len(track) >= 15:
            break
    else:
        raise RuntimeError("no pedestrian could be tracked for 15 frames in the test range")
    out, labels = [f.copy() for f in frames], np.zeros(n, np.uint8)
    rows = np.arange(frames[0].shape[0])[:, None]
    # How large and how far away the recoloured person is (the median over the tracked frames, at the stored
    # size): a model that reads 64 px frames sees region_px · 64² / (384 · 288) pixels of it.
    region_px = int(np.median([m.sum() for _, m in track]))
    region_row = int(np.median([np.nonzero(m)[0].mean() for _, m in track]))
    for i, mask in track:
        hsv = cv2.cvtColor(out[i], cv2.COLOR_RGB2HSV)
        value = hsv[..., 2].astype(np.float32)
        value = np.where((rows // stripe) % 2 == 0, np.minimum(value * 1.5 + 40, 255), value * 0.6)
        recoloured = np.stack([np.full_like(hsv[..., 0], hue), np.full_like(hsv[..., 1], 235),
                               value.astype(np.uint8)], axis=2)
        rgb = cv2.cvtColor(recoloured, cv2.COLOR_HSV2RGB)
        out[i][mask] = rgb[mask]
        labels[i] = 1
    return out, labels, {"hue": hue, "stripe_px": stripe, "tracked_frames": len(track), "region_px": region_px,
                         "region_row": region_row}


def make_test_videos(source: Sequence[np.ndarray], cfg: VtestConfig) -> Iterator[tuple[TestVideo, list[np.ndarray]]]:
    """(description, frames) of every test video; ``source[i]`` is source frame ``i`` (only the ranges are used)."""
    lo, hi = cfg.test_range
    background = _median_background(source[cfg.train_range[0]:cfg.train_range[1]])
    index = 0
    for rep in range(cfg.per_kind):
        for kind in cfg.kinds:
            index += 1
            rng = np.random.default_rng([cfg.seed, rep, KINDS.index(kind)])
            src, event, params = _timeline(kind, rng, cfg.video_len, lo, hi)
            assert all(lo <= s < hi for s in src), (kind, min(src), max(src))
            frames = [source[s] for s in src]
            labels = np.zeros(cfg.video_len, np.uint8)
            labels[list(event)] = 1
            if kind == "foreign_object":
                frames, labels, extra = _foreign_object(frames, rng)
                params.update(extra)
            elif kind == "appearance":
                frames, labels, extra = _appearance(frames, background, rng)
                params.update(extra)
            yield TestVideo(f"{index:02d}_{kind}", kind, src, labels, params), frames


def _write_frames(folder: Path, frames: Sequence[np.ndarray], quality: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        path = folder / f"{i:04d}.jpg"
        if not cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]):
            raise OSError(f"could not write {path}")


def build_vtest_set(
    video: str | Path,
    out: str | Path,
    cfg: VtestConfig = VtestConfig(),
    *,
    overwrite: bool = False,
    reader: Callable[[str], object] = _Capture,
) -> dict:
    """Write the validation set of ``cfg`` from ``video`` (vtest.avi) to ``out``; returns the metadata written.

    ``out`` must not hold a previous build unless ``overwrite``; the set is assembled in a sibling temporary folder
    and renamed into place, so an interrupted build leaves nothing half-written under ``out``.
    """
    from m2s2l_edge.io import atomic_write, atomic_write_text

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"{out} already exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    stop = max(cfg.train_range[1], cfg.test_range[1])
    source = read_source_frames(video, stop, size=cfg.size, reader=reader)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        a, b = cfg.train_range
        _write_frames(tmp / "training" / "frames" / "train", source[a:b], cfg.jpeg_quality)
        videos, labels = [], []
        for desc, frames in make_test_videos(source, cfg):
            _write_frames(tmp / "testing" / "frames" / desc.name, frames, cfg.jpeg_quality)
            labels.append(desc.labels)
            videos.append({"name": desc.name, "kind": desc.kind, "frames": len(frames),
                           "anomalous_frames": int(desc.labels.sum()),
                           "labelled": np.flatnonzero(desc.labels).tolist(), "sources": desc.sources,
                           "params": desc.params})
        concatenated = np.concatenate(labels)[None, :].astype(np.uint8)  # (1, N)
        atomic_write(tmp / LABELS_FILE, lambda p: _save_npy(p, concatenated))
        meta = {"source": str(video), "source_frames_read": stop, "held_out_from": HELD_OUT_FROM,
                "config": asdict(cfg), "train_frames": b - a, "test_videos": videos}
        atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=1))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    logger.info("vtest validation set: %d training frames, %d test videos (%d frames, %d anomalous) in %s",
                cfg.train_range[1] - cfg.train_range[0], len(videos), concatenated.shape[1],
                int(concatenated.sum()), out)
    return meta


def _save_npy(path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def load_meta(root: str | Path) -> dict:
    path = Path(root) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {root} a set written by build_vtest_set?")
    return json.loads(path.read_text(encoding="utf-8"))


def kinds_by_video(meta: dict) -> dict[str, str]:
    """Test video name → anomaly kind."""
    return {v["name"]: v["kind"] for v in meta["test_videos"]}


def per_kind_auc(names: Sequence[str], labels: Sequence[np.ndarray], scores: Sequence[np.ndarray],
                 kinds: dict[str, str]) -> dict[str, float]:
    """Micro AUC over the videos of each kind (scores already normalised per video), plus ``all``.

    ``labels`` and ``scores`` are the scored frames only (frames T.. of each video), aligned with ``names``.
    """
    from m2s2l_edge.evaluation.protocol import frame_auc

    result = {"all": frame_auc(labels, scores).micro}
    for kind in dict.fromkeys(kinds[n] for n in names):
        idx = [i for i, n in enumerate(names) if kinds[n] == kind]
        result[kind] = frame_auc([labels[i] for i in idx], [scores[i] for i in idx]).micro
    return result
