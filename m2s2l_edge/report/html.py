"""A self-contained HTML report: one file that opens from disk in any browser, with no server and nothing beside it.

The page is data plus one renderer: the report's content is a JSON document (below) embedded in the page, drawn by
``static/report.js`` with the vendored uPlot charts (``static/vendor/uplot``, MIT) and ``static/charts.js`` (the
chart settings the live web view shares); scripts, styles and pictures (JPEG data URIs) are all inlined.

The document (every key optional but ``title``)::

    {"title": str, "subtitle": str,
     "facts": [[label, value], ...],                 # a table of what was run
     "notes": [str, ...],
     "roc": {"fpr": [...], "tpr": [...], "auc": float, "title": str},
     "sections": [{                                  # one per video or camera
         "name": str, "facts": [[label, value], ...], "notes": [str, ...],
         "chart": {"x": [...], "x_label": str, "y_label": str, "time": bool,
                   "series": [{"label": str, "values": [...], "kind": "score" | "threshold" | "raw"}],
                   "shade": [[x0, x1], ...], "shade_label": str, "marks": [x, ...]},
         "frames_title": str,
         "frames": [{"caption": str, "x": number, "images": [{"label": str, "src": data URI}]}],
         "events": [{"id", "kind", "start", "duration_s", "peak_score", "snapshot": data URI | null, ...}]}]}

Text from the data (video and camera names, captions) is set as text by the renderer, never as HTML, and the JSON
is escaped so that no value can end its script element.
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

REPORT = "report.html"
# The static files a report inlines, in order (scripts after the data they read).
_STYLES = ("vendor/uplot/uPlot.min.css", "report.css")
_SCRIPTS = ("vendor/uplot/uPlot.iife.min.js", "charts.js", "report.js")


def static_file(name: str) -> str:
    """The text of one of this package's static files (``name`` relative to ``static/``)."""
    return resources.files("m2s2l_edge.report").joinpath("static", *name.split("/")).read_text(encoding="utf-8")


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as plain Python, and non-finite floats as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def render(data: dict[str, Any]) -> str:
    """The page for report document ``data`` (see the module docstring), as one string."""
    if not data.get("title"):
        raise ValueError("a report needs a title")
    # "<" as \u003c: a name holding "</script>" cannot end the data's script element.
    payload = json.dumps(_plain(data), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    payload = payload.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    styles = "\n".join(static_file(n) for n in _STYLES)
    scripts = "\n".join(f"<script>\n{static_file(n)}\n</script>" for n in _SCRIPTS)
    title = (str(data["title"]).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<meta name=\"generator\" content=\"m2s2l-edge\">\n<title>{title}</title>\n<style>\n{styles}\n</style>\n"
        "</head>\n<body>\n<main id=\"report\"><noscript>This report draws its charts with JavaScript; "
        "please allow scripts for this file.</noscript></main>\n"
        f"<script type=\"application/json\" id=\"report-data\">{payload}</script>\n{scripts}\n</body>\n</html>\n"
    )


def write_report(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write the page for ``data`` to ``path`` atomically (a reader never sees half a report); returns the path."""
    from m2s2l_edge.io import atomic_write_bytes

    atomic_write_bytes(path, render(data).encode("utf-8"))
    return Path(path)


def roc_data(labels: np.ndarray, scores: np.ndarray, title: str = "", max_points: int = 2000) -> dict[str, Any]:
    """The ROC of concatenated 0/1 ``labels`` and ``scores`` for the report: its points (thinned to about
    ``max_points``, corners kept) and its AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    if len(fpr) > max_points:
        keep = np.unique(np.concatenate([np.linspace(0, len(fpr) - 1, max_points).round().astype(int),
                                         [0, len(fpr) - 1]]))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": np.round(fpr, 5), "tpr": np.round(tpr, 5), "auc": float(roc_auc_score(labels, scores)),
            "title": title}


def intervals_of(flags: np.ndarray, x: np.ndarray) -> list[list[float]]:
    """Runs of true ``flags`` as [first x, last x] pairs (``x`` the position of each flag)."""
    flags = np.asarray(flags).reshape(-1).astype(bool)
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [[float(x[a]), float(x[b])] for a, b in zip(starts, stops, strict=True)]
