"""Regions of interest: the one ROI parser, the one bounds check against a frame, and the score of a frame's regions.

An ROI is a polygon of (x, y) points in source-frame pixels (a camera's ``--config`` ``roi`` / ``events.rois``, or
one drawn in the web view). The event tracker scores a frame by its most anomalous ROI: each polygon is rasterised
on the error map's grid once per (map, frame) size and scored by the calibration's mapping of that region's terms
(:func:`m2s2l_edge.scoring.terms.region_terms`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .types import FrameScore

Polygon = tuple[tuple[float, float], ...]


def check_rois_fit(rois: Sequence[Polygon], width: int, height: int, camera: str = "") -> None:
    """ValueError when a point of an ROI lies outside a ``width`` × ``height`` frame: the one bounds check (a camera's
    YAML ROIs on its first frame, the tracker on every new frame size)."""
    who = f"camera {camera!r}: " if camera else ""
    for i, poly in enumerate(rois):
        for x, y in poly:
            if not (0 <= x <= width and 0 <= y <= height):
                raise ValueError(
                    f"{who}ROI {i} point ({x:g}, {y:g}) lies outside the {width}x{height} frame "
                    f"(x must be in 0..{width}, y in 0..{height})"
                )


def parse_rois(rois: Any) -> tuple[Polygon, ...]:
    """ROIs from YAML / JSON: a list of polygons, or one polygon, each at least 3 [x, y] points of finite numbers >= 0
    enclosing an area → a tuple of polygons of (x, y) floats (the one ROI parser: ``--config`` and ``events:``)."""
    if rois is None:
        return ()
    if not isinstance(rois, Sequence) or isinstance(rois, str):
        raise ValueError("rois must be a list of polygons, each a list of [x, y] points")
    if rois and all(isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2
                    and all(isinstance(c, int | float) for c in p) for p in rois):
        rois = [rois]  # one polygon given bare
    out = []
    for i, poly in enumerate(rois):
        if not isinstance(poly, Sequence) or isinstance(poly, str) or len(poly) < 3:
            raise ValueError(f"ROI {i} must be a list of at least 3 [x, y] points, got {poly!r}")
        pts = []
        for p in poly:
            if (
                not isinstance(p, Sequence)
                or isinstance(p, str)
                or len(p) != 2
                or not all(isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) and c >= 0
                           for c in p)
            ):
                raise ValueError(f"ROI {i}: every point must be [x, y] with finite numbers >= 0 (source pixels), "
                                 f"got {p!r}")
            pts.append((float(p[0]), float(p[1])))
        xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        area = 0.5 * abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))
        if area <= 0:
            raise ValueError(f"ROI {i} has zero area (its points are collinear)")
        out.append(tuple(pts))
    return tuple(out)


def roi_mask(poly: Polygon, map_shape: tuple[int, int], frame_shape: tuple[int, int]) -> np.ndarray:
    """The polygon (source-frame pixels) rasterised on the error map's grid; (h, w) bool, never empty."""
    import cv2

    h, w = map_shape
    fh, fw = frame_shape
    pts = np.array([[x * w / fw, y * h / fh] for x, y in poly], np.float32)
    mask = np.zeros((h, w), np.uint8)
    # fillPoly takes fixed-point coordinates: 4 fractional bits keep small ROIs on a coarse map accurate.
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    if not mask.any():
        # An ROI smaller than one error-map pixel: use the pixel under its centroid.
        cx, cy = pts.mean(axis=0)
        mask[min(int(cy), h - 1), min(int(cx), w - 1)] = 1
    return mask.astype(bool)


class RegionScorer:
    """A frame's score from its ROIs: the largest of the ROIs' scores, and which ROI gave it.

    ``score_fn(frame_score, mask) -> calibrated score`` of the region ``mask`` (h, w) bool of the error map. The
    masks are cached per (error map, frame) size, so a polygon is rasterised once, not every frame.
    """

    def __init__(self, rois: Sequence[Polygon], score_fn: Callable[[FrameScore, np.ndarray], float]) -> None:
        self.rois = tuple(rois)
        self.score_fn = score_fn
        self._masks: dict[tuple, list[np.ndarray]] = {}

    def best(self, fs: FrameScore) -> tuple[float, int | None]:
        fh, fw = fs.frame.shape[:2]
        key = (fs.error_map.shape, (fh, fw))
        if key not in self._masks:
            self._masks[key] = [roi_mask(p, fs.error_map.shape, (fh, fw)) for p in self.rois]
        best, where = -math.inf, None
        for i, mask in enumerate(self._masks[key]):
            s = float(self.score_fn(fs, mask))
            if s > best:
                best, where = s, i
        return best, where
