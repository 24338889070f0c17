"""Evaluation and training plots as PNG files (matplotlib, Agg backend: no display needed).

Every function takes plain arrays, writes one file atomically and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from m2s2l_edge.io import atomic_path

_ANOMALY = "#d62728"
_SCORE = "#1f4e9c"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def intervals(labels: np.ndarray) -> list[tuple[int, int]]:
    """Runs of 1s in a 0/1 array as half-open [start, stop) frame intervals."""
    lab = np.asarray(labels).reshape(-1).astype(np.int8)
    edges = np.diff(np.concatenate([[0], lab, [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _shade(ax, labels: np.ndarray, label: str | None = "ground-truth anomaly") -> None:
    # A frame f covers [f - 0.5, f + 0.5] on the frame axis, so a one-frame anomaly is still visible.
    for k, (a, b) in enumerate(intervals(labels)):
        ax.axvspan(a - 0.5, b - 0.5, color=_ANOMALY, alpha=0.18, lw=0, label=label if k == 0 else None)


def plot_roc(labels: np.ndarray, scores: np.ndarray, path: str | os.PathLike, *, title: str = "") -> Path:
    """Frame-level ROC curve of concatenated labels and scores, with its AUC."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fpr, tpr, _ = roc_curve(labels, scores)
    auc = roc_auc_score(labels, scores)
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot(fpr, tpr, color=_SCORE, lw=2, label=f"M²S²L (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (normal frames flagged)")
    ax.set_ylabel("true positive rate (anomalous frames found)")
    ax.set_title(title or "frame-level ROC")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_video_scores(
    targets: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    path: str | os.PathLike,
    *,
    title: str = "",
) -> Path:
    """Anomaly score over time for one video, with the ground-truth anomalous intervals shaded.

    Shapes: targets, scores (N - T,) (the frames that have a prediction); labels (N,) over every frame.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 2.6))
    _draw_video(ax, targets, scores, labels)
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    return _save(fig, path)


def _draw_video(ax, targets, scores, labels) -> None:
    n = len(np.asarray(labels).reshape(-1))
    _shade(ax, labels)
    if len(targets):
        # No prediction for the first T frames: grey them so nobody reads the gap as "normal".
        ax.axvspan(-0.5, targets[0] - 0.5, color="0.85", lw=0, label="no prediction (first T frames)")
    ax.plot(targets, scores, color=_SCORE, lw=1.4, label="anomaly score")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlabel("frame")
    ax.set_ylabel("score")
    ax.grid(alpha=0.25)


def plot_overview(
    videos: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, float | str | None]],
    path: str | os.PathLike,
    *,
    title: str = "",
    max_videos: int = 16,
) -> Path:
    """All videos' score curves stacked in one figure: (name, targets, scores, labels, auc) per video; ``auc`` may
    also be a text shown in its place (e.g. "no labels")."""
    plt = _pyplot()
    shown = list(videos)[:max_videos]
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 1.45 * len(shown) + 1.0), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, (name, targets, scores, labels, auc) in zip(axes[:, 0], shown, strict=True):
        _draw_video(ax, targets, scores, labels)
        ax.set_xlabel("")
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        note = auc if isinstance(auc, str) else "single class" if auc is None else f"AUC {auc:.3f}"
        ax.text(0.995, 0.9, note, transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox=dict(fc="white", ec="none", alpha=0.8))
    axes[-1, 0].set_xlabel("frame")
    handles, names = [], []
    for ax in axes[:, 0]:  # a video without an anomaly has no red patch in its own legend
        for h, n in zip(*ax.get_legend_handles_labels(), strict=True):
            if n not in names:
                handles.append(h)
                names.append(n)
    fig.legend(handles, names, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    if len(videos) > max_videos:
        axes[-1, 0].set_xlabel(f"frame (first {max_videos} of {len(videos)} videos; each video has its own plot)")
    return _save(fig, path)


def plot_training(history: Sequence[dict], path: str | os.PathLike, *, title: str = "") -> Path:
    """Training loss per epoch: the total and each term, on a log scale."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(epochs, [h["loss"] for h in history], color="k", lw=2, marker="o", ms=3, label="total")
    for term in sorted({t for h in history for t in h["terms"]}):
        values = [h["terms"].get(term, np.nan) for h in history]
        if np.nanmax(np.abs(values)) > 0:
            ax.plot(epochs, values, lw=1.2, marker=".", label=term)
    ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title(title or "training loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def plot_efficiency(result: dict, path: str | os.PathLike) -> Path:
    """``m2s2l-edge table``'s result (``m2s2l_edge.efficiency.table.build_table``) as a picture: the paper's Avenue
    AUC (the one data set every row reports) against our count of GFLOPs per scored frame and, when measured, against
    our FPS; one point per method. In the cost panel a method with the paper's figures only is drawn hollow at the
    paper's FLOPs; the speed panel holds our measurements alone (the paper's FPS come from other hardware)."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    timed = "timing" in result
    fig, axes = plt.subplots(1, 2 if timed else 1, figsize=(14 if timed else 7.5, 5.6), squeeze=False)
    for ax, what in zip(axes[0], ("flops", "fps"), strict=False):
        placed: list[tuple[float, float]] = []
        points = []
        for r in result["rows"]:
            auc = r["paper"]["auc"].get("Avenue")
            if auc is None or r["kind"] not in ("ours", "peer", "paper-only", "ablation"):
                continue
            if what == "flops":
                x = r["ours"]["paper_gflops_per_frame"] if r["ours"] else r["paper"]["gflops"]
                hollow = r["ours"] is None
            else:
                x, hollow = (r["fps"]["fps"] if r["fps"] else None), False
            # Ablations show on the cost axis only (M4 is the full model, drawn as M²S²L).
            if x is None or (r["kind"] == "ablation" and (what == "fps" or r["key"].endswith("M4"))):
                continue
            points.append((x, auc, r, hollow))
        xs = [np.log10(p[0]) for p in points]
        ys = [p[1] for p in points]
        span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
        for (x, auc, r, hollow), lx in zip(points, xs, strict=True):
            ours = r["kind"] in ("ours", "ablation")
            color = _ANOMALY if ours else _SCORE
            size = 35 if r["kind"] == "ablation" else 80
            ax.scatter([x], [auc], s=size, facecolors="none" if hollow else color, edgecolors=color, zorder=3)
            label = r["key"].split("-")[-1] if r["kind"] == "ablation" else r["method"].split(" (")[0]
            # Labels of nearby points go below instead of above, so neighbours do not overprint each other.
            crowded = any(abs(lx - px) / span_x < 0.12 and abs(auc - py) / span_y < 0.06 for px, py in placed)
            placed.append((lx, auc))
            ax.annotate(label, (x, auc), textcoords="offset points", xytext=(6, -12 if crowded else 4), fontsize=8,
                        color=color if ours else "black")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_ylabel("paper AUC on CUHK Avenue (%)")
        ax.grid(True, which="both", alpha=0.3)
        if what == "flops":
            ax.set_xlabel("our count: GFLOPs per scored frame (MACs + scan), log scale")
            ax.set_title("accuracy (paper) vs cost (our count)")
        else:
            t = result["timing"]
            ax.set_xlabel(f"our FPS on {t['device']} ({t['precision']}, batch {t['batch']}), log scale")
            ax.set_title("accuracy (paper) vs speed (measured here, same run)")
    fig.text(0.01, 0.005, "red: M²S²L (small: ablations M1-M3); blue: peers; hollow: the paper's own FLOPs "
             "(no public code)", fontsize=8)
    return _save(fig, path)
