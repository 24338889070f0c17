"""What ``eval`` writes: per-video scores (NumPy and CSV), the plots and ``results.json``, as one atomic folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from m2s2l_edge.scoring.terms import FRAME_COLUMNS, TERMS

if TYPE_CHECKING:
    from m2s2l_edge.evaluation.run import EvalResult, VideoResult

RESULTS = "results.json"


def _file_stem(name: str) -> str:
    # Video names come from folder and file names; keep them readable but never let one escape <out>/scores/.
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".")
    return stem or "video"


def _save_npy(path, array: np.ndarray) -> None:
    # Through a file object: np.save on a path appends ".npy" to a name that lacks it (our temporary name does).
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _frame_table(v: VideoResult) -> str:
    """Per frame: the terms, the fused PSNR the score is made of, the score (FRAME_COLUMNS, as watch --scores)."""
    rows = [",".join(FRAME_COLUMNS)]
    for i, t in enumerate(v.targets):
        terms = [f"{v.terms[k][i]:.6f}" if k == "change" else f"{v.terms[k][i]:.4f}" for k in TERMS]
        rows.append(",".join([str(int(t)), *terms, f"{v.fused[i]:.4f}", f"{v.scores[i]:.6f}"]))
    return "\n".join(rows) + "\n"


def write_outputs(result: EvalResult, out_dir, *, meta: dict | None = None, plots: bool = True,
                  replace: bool = False) -> dict[str, object]:
    """Write ``<out>/scores/<video>.npy`` (the anomaly score), ``<out>/scores/<video>.csv`` (per frame: the terms,
    fused PSNR, score), the plots and ``<out>/results.json``.

    The files are written into a fresh folder that then replaces ``<out>`` (:func:`m2s2l_edge.io.atomic_dir`), so
    ``<out>`` holds one run's files, never a mix of two, and a failure leaves an earlier run untouched. An existing
    non-empty ``<out>`` is refused unless ``replace``. Returns the paths written (under ``<out>``).
    """
    import json
    from pathlib import Path

    from m2s2l_edge.io import atomic_dir

    out = Path(out_dir)
    stems: dict[str, str] = {}
    for v in result.videos:
        stem = _file_stem(v.name)
        while stem in stems.values():  # two names that sanitise alike
            stem += "_"
        stems[v.name] = stem
    paths: dict[str, object] = {"scores": str(out / "scores")}
    with atomic_dir(out, replace=replace) as tmp:
        (tmp / "scores").mkdir()
        for v in result.videos:
            _save_npy(tmp / "scores" / f"{stems[v.name]}.npy", v.scores.astype(np.float32))
            (tmp / "scores" / f"{stems[v.name]}.csv").write_text(_frame_table(v), encoding="utf-8")
        if plots:
            from m2s2l_edge.report import plots as P

            (tmp / "plots").mkdir()
            tag = (meta or {}).get("title", "")
            if result.auc is not None:
                labels = np.concatenate([v.scored_labels for v in result.videos])
                scores = np.concatenate([v.scores for v in result.videos])
                P.plot_roc(labels, scores, tmp / "roc.png",
                           title=f"frame-level ROC {tag}".strip() + f" (micro AUC {result.auc.micro:.3f})")
                paths["roc"] = str(out / "roc.png")
            P.plot_overview([(v.name, v.targets, v.scores, v.plot_labels, v.auc if result.auc else "no labels")
                             for v in result.videos], tmp / "scores_overview.png",
                            title=f"anomaly scores per video {tag}".strip())
            paths["overview"] = str(out / "scores_overview.png")
            for v in result.videos:
                auc = "no labels" if result.auc is None else "single class" if v.auc is None else f"AUC {v.auc:.3f}"
                P.plot_video_scores(v.targets, v.scores, v.plot_labels, tmp / "plots" / f"{stems[v.name]}.png",
                                    title=f"video {v.name}: {auc}, λ = {result.lam}")
            paths["plots"] = str(out / "plots")
        paths["results"] = str(out / RESULTS)
        data = {**(meta or {}), **result.as_dict(), "files": paths}
        data["per_video"] = [{**row, "scores_file": f"scores/{stems[row['name']]}.npy",
                              "frames_file": f"scores/{stems[row['name']]}.csv"} for row in data["per_video"]]
        (tmp / RESULTS).write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return paths
