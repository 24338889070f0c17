"""Saving a camera's threshold and ROIs from the web view into the ``watch --config`` file, so a saved file is always
one ``watch --config`` accepts.

The file is edited round-trip (ruamel.yaml keeps its comments, key order and flow style), only the camera's
``threshold`` / ``roi`` keys change, and the result is written to a temporary file beside it and read back through
:func:`m2s2l_edge.watch.cameras.load_cameras` — the parser and checks ``watch --config`` runs — plus the ROI bounds
check against the camera's frame (:func:`m2s2l_edge.watch.regions.check_rois_fit`). Only a file that passes replaces
the original (atomically); anything else is a ValueError naming the reason, and the original stays as it was.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from m2s2l_edge.ui import INSTALL_UI

_LOCK = threading.Lock()  # one save at a time (two browsers saving at once would each lose the other's change)
_UNSET = object()


def _number(v: float) -> int | float:
    """A coordinate or level as YAML shows it best: an integer when it is one, else rounded to 0.1 (pixels) / 1e-4."""
    r = round(float(v), 4)
    return int(r) if r == int(r) else r


def save_camera(path: str | os.PathLike, camera: str, *, threshold=_UNSET, rois=_UNSET,
                frame_size: tuple[int, int] | None = None) -> Path:
    """Set camera ``camera``'s ``threshold`` (a number, or None to remove it: the calibration's applies) and/or
    ``roi`` (polygons of [x, y] source pixels; [] removes it: the whole frame) in the YAML file ``path``.

    ``frame_size`` (W, H): ROI points must lie inside it. Returns the path. ValueError when the result would not be
    a valid ``--config`` file (the message is :func:`~m2s2l_edge.watch.cameras.load_cameras`'s); the file is then
    unchanged.
    """
    try:
        from ruamel.yaml import YAML
        from ruamel.yaml.comments import CommentedMap, CommentedSeq
    except ImportError:
        raise RuntimeError(f"saving settings needs ruamel.yaml: {INSTALL_UI}") from None
    from m2s2l_edge.io import atomic_path
    from m2s2l_edge.watch.cameras import load_cameras
    from m2s2l_edge.watch.regions import check_rois_fit, parse_rois

    path = Path(path)
    yaml = YAML()  # round-trip: comments, order and styles kept
    yaml.width = 4096
    yaml.preserve_quotes = True
    with _LOCK:
        data = yaml.load(path.read_text(encoding="utf-8"))
        cameras = data.get("cameras") if isinstance(data, dict) else None
        if not isinstance(cameras, dict) or camera not in cameras:
            raise ValueError(f"{path} has no camera {camera!r} under 'cameras:'")
        entry = cameras[camera]
        if entry is None:
            entry = cameras[camera] = CommentedMap()
        if threshold is not _UNSET:
            if threshold is None:
                entry.pop("threshold", None)
            else:
                entry["threshold"] = _number(threshold)
        if rois is not _UNSET:
            parsed = parse_rois(list(rois))
            if frame_size is not None:
                check_rois_fit(parsed, *frame_size, camera)
            if not parsed:
                entry.pop("roi", None)
            else:
                polygons = CommentedSeq([CommentedSeq([CommentedSeq([_number(x), _number(y)]) for x, y in poly])
                                         for poly in parsed])
                for poly in polygons:
                    for point in poly:
                        point.fa.set_flow_style()
                    poly.fa.set_flow_style()
                polygons.fa.set_flow_style()
                entry["roi"] = polygons
        text = io.StringIO()
        yaml.dump(data, text)
        # The temporary sits beside the file, so relative paths in it (sources, calibrations) resolve the same.
        with atomic_path(path, keep_suffix=True) as tmp:
            Path(tmp).write_text(text.getvalue(), encoding="utf-8")
            try:
                saved = {c.camera: c for c in load_cameras(tmp)}
            except ValueError as e:
                raise ValueError(str(e).replace(str(tmp), str(path))) from None
            if frame_size is not None:
                check_rois_fit(saved[camera].roi, *frame_size, camera)
    return path


def camera_config_summary(cameras: Sequence) -> dict[str, dict]:
    """What the web view shows of each camera's file settings: its threshold and ROIs as read from the file."""
    return {c.camera: {"threshold": c.threshold, "roi": [[list(p) for p in poly] for poly in c.roi]} for c in cameras}
