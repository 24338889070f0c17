"""``watch --report FILE``: the end of a run as one self-contained HTML page (:mod:`m2s2l_edge.report.html`).

Per camera: the run's score curve with the threshold in force and the events shaded (the feed's peak-preserving
history, so a long run stays a few thousand points), its counters and health, the most anomalous frames with the
error map over them, and the events with their snapshots inlined (the newest :data:`INLINED_SNAPSHOTS`; older ones are
listed without a picture, so the page stays a few MB however long the run).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from m2s2l_edge.watch.live import LiveFeed

logger = logging.getLogger(__name__)

INLINED_SNAPSHOTS = 60
_FAULTS = ("frozen", "black", "saturated", "signal_lost")


def _snapshot(path: str | None) -> str | None:
    from m2s2l_edge.report.images import data_uri

    if not path:
        return None
    try:
        return data_uri(Path(path).read_bytes())
    except OSError:  # deleted by the retention limits, or never written: listed without its picture
        return None


def _when(moment: dict[str, Any]) -> str:
    """An event's start for people: its UTC wall time and its place in the stream."""
    wall = (moment.get("wall_time") or "").replace("T", " ").replace("Z", " UTC")
    at = f"{moment['stream_time']:.1f} s into the stream" if moment.get("stream_time") is not None else ""
    return ", ".join(p for p in (wall, at) if p)


def watch_report(feed: LiveFeed, summary: dict[str, Any]) -> dict[str, Any]:
    """The report document of a finished watch (its :class:`LiveFeed` and its summary)."""
    from m2s2l_edge import __version__
    from m2s2l_edge.report.html import intervals_of
    from m2s2l_edge.report.images import data_uri

    model = summary.get("model") or {}
    facts = [["cameras", len(summary["cameras"])], ["frames scored", summary["scored_frames"]],
             ["events", summary["events"]], ["camera faults", summary["faults"]],
             ["score", model.get("score")], ["model", model.get("preset")],
             ["input", f"{model.get('clip_len')} × {'×'.join(str(v) for v in model.get('image_size') or [])}"],
             ["backend", (summary.get("backend") or {}).get("name")],
             ["time", f"{summary['wall_seconds']:.1f} s"], ["stopped by", summary.get("stopped_by")]]
    events = feed.events(limit=10_000)
    inline = {m["id"] for m in [e for e in events if e.get("snapshot")][-INLINED_SNAPSHOTS:]}
    sections = []
    for name, cam in summary["cameras"].items():
        curve = feed.history(name)
        x = [p[1] for p in curve]
        chart = {"x": x, "x_label": "stream time (s)", "y_label": "score", "time": False,
                 "series": [{"label": "score (smoothed)", "values": [p[2] for p in curve], "kind": "score"},
                            {"label": "threshold", "values": [p[3] for p in curve], "kind": "threshold"}],
                 "shade": intervals_of([p[4] for p in curve], x) if curve else [], "shade_label": "event open",
                 "marks": [f.info.get("stream_time") for f in feed.top_frames(name)]}
        facts_cam = [["source", cam["source"]], ["frames scored", f"{cam['scored_frames']} of "
                                                                  f"{cam['captured_frames']} captured"],
                     ["events", cam["events"]], ["faults", cam["faults"]],
                     ["threshold", None if cam["threshold"] is None else round(cam["threshold"], 3)],
                     ["threshold from", cam.get("threshold_source")],
                     ["peak score", None if cam.get("peak_score") is None else round(cam["peak_score"], 3)],
                     ["frames at or above the threshold", cam.get("frames_above_threshold")],
                     ["clips dropped", cam["dropped_clips"]], ["gaps", cam["gaps"]], ["reconnects", cam["reconnects"]]]
        t = (summary.get("telemetry") or {}).get("cameras", {}).get(name) or {}
        if t.get("latency_ms"):
            facts_cam.append(["latency p50 / p95", f"{t['latency_ms'].get('p50') or 0:.0f} / "
                                                   f"{t['latency_ms'].get('p95') or 0:.0f} ms"])
        notes = [] if cam["calibration"] == cam.get("threshold_source") else [cam["calibration"]]
        notes += [f"calibration warning: {cam['calibration_warning']}"] if cam.get("calibration_warning") else []
        frames = [{"x": f.info.get("stream_time"),
                   "caption": f"frame {f.index} at {f.info.get('stream_time', 0):.1f} s: score "
                              f"{f.info.get('score') or 0:.2f} (raw {f.info.get('raw_score') or 0:.2f}), "
                              f"fused PSNR {f.info.get('fused') or 0:.2f} dB",
                   "images": [{"label": {"frame": "frame", "overlay": "error map over it", "error": "error map"}[k],
                               "src": data_uri(b)} for k, b in f.images.items()]}
                  for f in feed.top_frames(name)]
        rows = []
        for m in reversed([e for e in events if e.get("camera") == name]):
            rows.append({"id": m["id"], "kind": m["kind"],
                         "start": _when(m["first"]),
                         "duration_s": m.get("duration_s"),
                         "peak_score": (m.get("peak") or {}).get("score"),
                         "snapshot": _snapshot(m.get("snapshot")) if m["id"] in inline else None})
        sections.append({"name": name, "facts": facts_cam, "notes": notes, "chart": chart,
                         "frames_title": "Most anomalous frames", "frames": frames,
                         "events_title": "Events and camera faults", "events": rows})
    return {"title": "m2s2l-edge watch report",
            "subtitle": ", ".join(f"{n}: {c['source']}" for n, c in summary["cameras"].items()),
            "facts": facts,
            "notes": ["Scores are calibrated: 0 is a typical normal frame of the camera, higher is more anomalous, in "
                      "robust σ of its normal footage; events start where the smoothed score reaches the threshold.",
                      "Long runs: each point of a curve is the highest score of its stretch of frames, so no peak is "
                      "lost."],
            "sections": sections, "footer": f"m2s2l-edge {__version__}."}


def write_watch_report(path: str | os.PathLike, feed: LiveFeed, summary: dict[str, Any]) -> Path:
    """Write :func:`watch_report` to ``path`` (atomically); returns the path."""
    from m2s2l_edge.report.html import write_report

    written = write_report(path, watch_report(feed, summary))
    logger.info("report written to %s", written)
    return written
