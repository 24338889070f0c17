"""Pictures of what the model saw: a prediction's error map in colour, over a frame or alone, as JPEG bytes.

The one colour scale every picture uses (``watch``'s snapshots and annotated video, the live web view, the HTML
reports): the per-pixel squared error of the frame prediction on the [0, 1] scale, divided by ``vmax`` (full red),
through JET up to 224 of 255 (its last eighth darkens to maroon, which would make the worst error the least visible).

Shapes: frames are (H, W, 3) uint8 RGB; error maps (h, w) float32 at the model's resolution (resized to the frame).
"""

from __future__ import annotations

import base64

import numpy as np

# Floor of the colour scale: a near-perfect prediction (error ~1e-5) must not be stretched into a red map.
MIN_VMAX = 1e-3
# A fixed scale for pictures meant to be compared (the frames of a video, a camera's live view): squared error
# 0.02 (PSNR 17 dB) at full red.
VIDEO_VMAX = 0.02


def error_level(error_map: np.ndarray, size: tuple[int, int], vmax: float | None = None) -> np.ndarray:
    """The error map on the colour scale's [0, 1], resized to ``size`` = (W, H): (H, W) float32.

    ``vmax``: the error shown at full red; None takes the map's own 99.5th percentile (floored at
    :data:`MIN_VMAX`), which suits one anomalous frame; a sequence of frames should pass a fixed value so that colours
    mean the same on every frame.
    """
    import cv2

    if error_map.ndim != 2:
        raise ValueError(f"error map must be (h, w), got shape {error_map.shape}")
    err = np.nan_to_num(np.asarray(error_map, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(np.percentile(err, 99.5)) if vmax is None else float(vmax)
    level = np.clip(err / max(top, MIN_VMAX), 0.0, 1.0)
    return cv2.resize(level, (int(size[0]), int(size[1])), interpolation=cv2.INTER_LINEAR)


def colour_map(level: np.ndarray) -> np.ndarray:
    """Levels in [0, 1], (H, W) → JET colours (H, W, 3) uint8 RGB."""
    import cv2

    colour = cv2.applyColorMap((np.clip(level, 0.0, 1.0) * 224).astype(np.uint8), cv2.COLORMAP_JET)  # BGR
    return cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)


def error_image(error_map: np.ndarray, size: tuple[int, int] | None = None, vmax: float | None = None) -> np.ndarray:
    """The error map alone in colour, (H, W, 3) uint8 RGB at ``size`` = (W, H) (default: the map's own)."""
    h, w = error_map.shape[:2]
    return colour_map(error_level(error_map, size or (w, h), vmax))


def heat_overlay(
    frame: np.ndarray, error_map: np.ndarray, alpha: float = 0.45, vmax: float | None = None
) -> np.ndarray:
    """The error map's colours blended over ``frame`` in proportion to the error; returns (H, W, 3) uint8 RGB."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    h, w = frame.shape[:2]
    level = error_level(error_map, (w, h), vmax)
    colour = colour_map(level)
    # Blend in proportion to the error (square root: moderate errors still show), so normal regions keep the
    # frame's own colours.
    weight = (alpha * np.sqrt(level))[..., None]  # (H, W, 1)
    out = frame.astype(np.float32) * (1.0 - weight) + colour.astype(np.float32) * weight
    return np.clip(out, 0, 255).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A model-unit image, (3, H, W) float in [-1, 1], → (H, W, 3) uint8 RGB."""
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {x.shape}")
    return np.clip((x.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def fit_width(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` scaled down (never up) so that its longer side is at most ``max_side`` pixels."""
    import cv2

    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def encode_jpeg(image_rgb: np.ndarray, quality: int = 90) -> bytes:
    """RGB uint8 → JPEG bytes (OpenCV wants BGR)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image_rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes()


def data_uri(data: bytes, mime: str = "image/jpeg") -> str:
    """Bytes as a ``data:`` URI, for a page that must open from disk with nothing beside it."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
