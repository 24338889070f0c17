"""Which cameras to watch: repeated ``--source`` options or a YAML file (``--config cameras.yaml``).

The YAML file, validated strictly (an empty or malformed file, an unknown key, a bad value, an ROI outside the
frame are each refused with one line naming the camera and the key)::

    defaults:                      # optional: applied to every camera, overridden per camera
      calibration: site.calib.json
    cameras:
      gate:                        # the camera id (used in events, topics, metrics)
        source: rtsp://user:pass@10.0.0.5/stream1
        calibration: gate.calib.json
        roi: [[[0, 0], [640, 0], [640, 300], [0, 300]]]   # polygons in source pixels (x, y); scored region only
        threshold: 4.5             # calibrated-score level an event starts at (default: the calibration's)
        off_threshold: 3.0         # hysteresis: the event ends below this (default: half the threshold)
        events:                    # the rest of the event settings (m2s2l_edge.watch.events.EventConfig)
          min_duration_s: 0.5
          cooldown_s: 10
        faults:                    # camera-fault checks (m2s2l_edge.watch.faults.FaultConfig)
          frozen_s: 5
        fps: 25                    # pacing of a frame folder; expected rate of a live source
        video_out: gate.mp4        # annotated video of this camera
        keep_mb: 200               # this camera's snapshots and clips: at most 200 MB, oldest deleted first
        keep_hours: 72             # ... and none older than 72 hours

ROI polygons are given in the source's pixel coordinates; they are checked against the frame size once the
camera's first frame arrives (an ROI outside the frame stops that camera with one line).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from m2s2l_edge.watch.feeds import SourceSpec, parse_source
from m2s2l_edge.watch.regions import parse_rois

CAMERA_KEYS = ("source", "calibration", "roi", "threshold", "off_threshold", "events", "faults", "fps", "video_out",
               "keep_mb", "keep_hours")
TOP_KEYS = ("cameras", "defaults")
_CAMERA_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class CameraConfig:
    """One camera: its source and per-camera settings (None: the default)."""

    spec: SourceSpec
    calibration: Path | None = None
    roi: tuple[tuple[tuple[float, float], ...], ...] = ()  # polygons of (x, y) source pixels
    threshold: float | None = None
    off_threshold: float | None = None
    events: tuple[tuple[str, object], ...] = ()  # further EventConfig fields, as (key, value) pairs
    faults: tuple[tuple[str, object], ...] = ()  # FaultConfig fields, as (key, value) pairs
    video_out: Path | None = None
    keep_mb: float | None = None  # retention of this camera's snapshots and clips (None: only the total limit)
    keep_hours: float | None = None

    @property
    def on_level(self) -> float | None:
        """The camera's own threshold: ``threshold``, else an ``on`` in its ``events:`` (None: the calibration's)."""
        if self.threshold is not None:
            return self.threshold
        on = dict(self.events).get("on")
        return None if on is None else float(on)

    def event_settings(self) -> dict:
        """The mapping for ``EventConfig.from_mapping``: ``events:`` with the off level and the ROIs. The on level is
        not in it: the threshold in force comes with every frame (``FrameScore.threshold``, chosen by the watch's
        ``CameraScorer`` from ``--threshold``, :attr:`on_level` and the calibration), so that one rule decides it."""
        out = {k: v for k, v in self.events if k != "on"}
        if self.off_threshold is not None:
            out["off"] = self.off_threshold
        if self.roi:
            out["rois"] = [list(map(list, poly)) for poly in self.roi]
        return out

    @property
    def camera(self) -> str:
        return self.spec.camera


def check_camera_id(camera: str) -> str:
    if not camera or not set(camera) <= _CAMERA_ID_CHARS:
        raise ValueError(f"camera id {camera!r}: use letters, digits, '-', '_' and '.' (it names MQTT topics and "
                         "metric labels)")
    return camera


def cameras_from_sources(sources: list[str], calibration: Path | None = None) -> tuple[CameraConfig, ...]:
    """``--source`` values as cameras ``cam0``, ``cam1``, ...; one ``--calibration`` applies to each."""
    if not sources:
        raise ValueError("give at least one --source (or --config cameras.yaml)")
    return tuple(CameraConfig(parse_source(s, f"cam{i}"), calibration=calibration) for i, s in enumerate(sources))


def cameras_of(sources: list[str] | None, config: str | os.PathLike | None) -> tuple[CameraConfig, ...]:
    """The cameras a watch is given: ``--source`` values (repeatable) or a ``--config`` YAML file, exactly one."""
    if (sources and config) or not (sources or config):
        raise ValueError("give the cameras either as --source (repeatable) or as --config cameras.yaml")
    return load_cameras(config) if config else cameras_from_sources(sources)


def _number(value, where: str, *, positive: bool = False, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{where}: must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}: must be >= {minimum}, got {value}")
    return float(value)


def _roi(value, where: str) -> tuple[tuple[tuple[float, float], ...], ...]:
    """A polygon [[x, y], ...] or a list of them → tuple of polygons of (x, y) (regions.parse_rois, with the place)."""
    if not value:
        raise ValueError(f"{where}: expected a polygon [[x, y], ...] or a list of polygons")
    try:
        return parse_rois(value)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _section(value, where: str, key: str) -> tuple[tuple[str, object], ...]:
    """A camera's ``events:`` / ``faults:`` mapping, checked now (unknown keys, bad values) so a typo fails before
    any work."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ValueError(f"{where}: {key}: expected a mapping of settings, got {type(value).__name__}")
    if key == "events":
        from m2s2l_edge.watch.events import EventConfig as Settings
    else:
        from m2s2l_edge.watch.faults import FaultConfig as Settings
    try:
        Settings.from_mapping(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {key}: {e}") from None
    return tuple((str(k), v) for k, v in value.items())


def _path(value, where: str, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a file path, got {value!r}")
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else base / p


def _check_unique_keys(node, where: str = "") -> None:
    """ValueError for a key given twice in one mapping of a composed YAML tree: plain YAML keeps the last silently, so
    a camera defined twice would lose its first definition (and every event of it) without a word."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_unique_keys(item, where)
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key is not None:
            if key in seen:
                what = f"camera {key!r} is defined" if where == "cameras" else f"key {key!r} is given"
                raise ValueError(f"{what} twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                                 "give each once")
            seen[key] = key_node.start_mark.line
        _check_unique_keys(value_node, key if where == "" else f"{where}.{key}")


def load_cameras(path: str | os.PathLike) -> tuple[CameraConfig, ...]:
    """Cameras of a YAML file (see the module docstring). Relative paths are relative to the file's folder."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        _check_unique_keys(yaml.compose(text, Loader=yaml.SafeLoader))
    except ValueError as e:
        raise ValueError(f"--config {path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ValueError(f"--config {path}: malformed YAML{where}: {problem}") from None
    if data is None:
        raise ValueError(f"--config {path} is empty; it needs a 'cameras:' mapping of camera id → settings")
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping with 'cameras:', got a {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - set(TOP_KEYS))
    if unknown:
        raise ValueError(f"--config {path}: unknown key {unknown[0]!r}; valid: {', '.join(TOP_KEYS)}")
    cameras = data.get("cameras")
    if not isinstance(cameras, dict) or not cameras:
        raise ValueError(f"--config {path}: 'cameras' must map each camera id to its settings (got "
                         f"{type(cameras).__name__ if cameras is not None else 'nothing'})")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ValueError(f"--config {path}: 'defaults' must be a mapping of camera settings")
    base = path.parent
    out = []
    for camera, settings in cameras.items():
        camera = check_camera_id(str(camera))
        if not isinstance(settings, dict):
            raise ValueError(f"--config {path}: camera {camera!r}: expected a mapping of settings, got "
                             f"{type(settings).__name__}")
        merged = {**defaults, **settings}
        for key in merged:
            if key not in CAMERA_KEYS:
                raise ValueError(f"--config {path}: camera {camera!r}: unknown key {key!r}; valid: "
                                 f"{', '.join(CAMERA_KEYS)}")
        where = f"--config {path}: camera {camera!r}"
        if "source" not in merged:
            raise ValueError(f"{where}: no 'source'")
        source = merged["source"]
        if not isinstance(source, (str, int)) or isinstance(source, bool):
            raise ValueError(f"{where}: source: expected a path, device, URL or pipeline, got {source!r}")
        fps = _number(merged["fps"], f"{where}: fps", positive=True) if "fps" in merged else None
        source = str(source)
        if "://" not in source and "!" not in source and not source.isdigit() and not source.startswith("/dev/"):
            source = str(_path(source, f"{where}: source", base))
        try:
            spec = parse_source(source, camera, fps)
        except ValueError as e:
            raise ValueError(f"--config {path}: {e}") from None

        def num(key: str, **kw) -> float | None:
            return _number(merged[key], f"{where}: {key}", **kw) if key in merged else None  # noqa: B023

        threshold, off = num("threshold"), num("off_threshold")
        if threshold is not None and off is not None and not off < threshold:
            raise ValueError(f"{where}: off_threshold {off} must be below threshold {threshold} (hysteresis)")
        out.append(CameraConfig(
            spec=spec,
            calibration=_path(merged["calibration"], f"{where}: calibration", base) if "calibration" in merged
            else None,
            roi=_roi(merged["roi"], f"{where}: roi") if "roi" in merged else (),
            threshold=threshold,
            off_threshold=off,
            events=_section(merged.get("events"), where, "events"),
            faults=_section(merged.get("faults"), where, "faults"),
            video_out=_path(merged["video_out"], f"{where}: video_out", base) if "video_out" in merged else None,
            keep_mb=num("keep_mb", positive=True),
            keep_hours=num("keep_hours", positive=True),
        ))
    return tuple(out)
