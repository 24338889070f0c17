"""What ``eval`` writes: per-video scores (NumPy and CSV), the plots, ``report.html`` and ``results.json``, as one
atomic folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from m2s2l_edge.scoring.terms import FRAME_COLUMNS, TERMS

if TYPE_CHECKING:
    from m2s2l_edge.evaluation.run import EvalResult, VideoResult

RESULTS = "results.json"
# Frames per video the HTML report shows (kept while scoring: evaluate(top_frames=...)).
REPORT_FRAMES = 3


def check_replaceable(out, overwrite: bool) -> None:
    """FileExistsError when ``overwrite`` would replace a folder that holds files but is not an earlier evaluation (no
    :data:`RESULTS`): a replace must never take another tool's files with it."""
    from pathlib import Path

    out = Path(out)
    if overwrite and out.is_dir() and any(out.iterdir()) and not (out / RESULTS).is_file():
        raise FileExistsError(f"--out {out} holds files but no {RESULTS}, so it is not an earlier evaluation; "
                              "--overwrite replaces only those: choose a new or empty folder")


def run_record(backend, *, dataset: str, data, kind: str, source) -> dict:
    """What ``results.json`` and the report record about the run besides its results: the data, the model file and
    its backend kind, the report's title, and the selective-scan path the model ran (when its metadata says)."""
    scan_path = (getattr(backend, "metadata", None) or {}).get("selective_scan")
    return {"dataset": dataset, "data": str(data), "backend": kind, "source": str(source), "title": f"({dataset})",
            **({"selective_scan": scan_path} if scan_path else {})}


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
    fused PSNR, score), the plots, ``<out>/report.html`` (:func:`eval_report`, self-contained) and
    ``<out>/results.json``.

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
        from m2s2l_edge.report.html import REPORT, write_report

        write_report(tmp / REPORT, eval_report(result, meta or {}, stems))
        paths["report"] = str(out / REPORT)
        paths["results"] = str(out / RESULTS)
        data = {**(meta or {}), **result.as_dict(), "files": paths}
        data["per_video"] = [{**row, "scores_file": f"scores/{stems[row['name']]}.npy",
                              "frames_file": f"scores/{stems[row['name']]}.csv"} for row in data["per_video"]]
        (tmp / RESULTS).write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return paths


def eval_report(result: EvalResult, meta: dict, stems: dict[str, str] | None = None) -> dict:
    """The HTML report's document (:mod:`m2s2l_edge.report.html`) of one evaluation: what was run, the ROC, and per
    video its score curve (labelled anomalies shaded) and the frames the model predicted worst, each beside its
    prediction and error map (``VideoResult.top_frames``)."""
    from m2s2l_edge.report.html import intervals_of, roc_data
    from m2s2l_edge.report.images import VIDEO_VMAX, data_uri

    auc = result.auc
    d = result.as_dict()
    facts = [["data", meta.get("data")], ["data set", meta.get("dataset")], ["backend", meta.get("backend")],
             ["model", meta.get("source")], ["score", result.scoring.score_name],
             ["λ", f"{result.lam} ({result.scoring.lam_source})"], ["clip length T", result.clip_len],
             ["resolution", "×".join(str(v) for v in result.image_size)], ["videos", len(result.videos)],
             ["frames scored", result.predicted_frames],
             ["time", f"{result.seconds:.1f} s ({d['fps']:.1f} frames/s)" if d["fps"] else f"{result.seconds:.1f} s"]]
    if meta.get("selective_scan"):
        facts.append(["selective scan", meta["selective_scan"]])
    if auc is not None:
        # Formatted here, once: the page's own number format (3 decimals) would round 0.9525 one way in the table
        # and Python another in the ROC's title.
        facts[:0] = [["micro AUC", f"{auc.micro:.4f}"],
                     ["macro AUC", None if d["macro_auc"] is None else f"{d['macro_auc']:.4f}"]]
    if result.calibration is None:
        notes = ["Scores are normalised within each video (0 = its most normal frame, 1 = its most anomalous), so a "
                 "curve ranks frames within its video; the fused PSNR (dB, lower = predicted worse) compares across "
                 "videos."]
    else:
        facts.append(["normalisation", result.normalisation])
        notes = [f"Scores are the calibrated camera's (0 = a typical normal frame of its calibration footage, in "
                 f"robust σ of it; its threshold is {result.threshold:.3f}), smoothed over past frames as watch "
                 "smooths them: they compare across videos, and a frame at or above the threshold would be part of an "
                 "event live."]
    if auc is None:
        notes.append("No labels: no AUC was computed (pass --labels to compute one).")
    notes.append(f"Frames shown: per video, the {max((len(v.top_frames) for v in result.videos), default=0)} frames "
                 "the model predicted worst (lowest fused PSNR of the score's terms, a few frames apart), each as it "
                 f"came in, as predicted, and the squared error of the prediction (full red at {VIDEO_VMAX}).")
    roc = None
    if auc is not None:
        labels = np.concatenate([v.scored_labels for v in result.videos])
        scores = np.concatenate([v.scores for v in result.videos])
        roc = roc_data(labels, scores, title=f"Frame-level ROC, micro AUC {auc.micro:.4f}")
    sections = []
    for v in result.videos:
        auc_text = "no labels" if auc is None else "single class" if v.auc is None else f"{v.auc:.4f}"
        vf = [["frames", v.frames], ["scored", len(v.targets)], ["AUC", auc_text],
              ["mean fused PSNR", f"{float(np.mean(v.fused)):.2f} dB" if len(v.fused) else None]]
        if v.labels is not None:
            vf.insert(2, ["labelled anomalous (scored)", int(v.scored_labels.sum())])
        if stems is not None:
            vf.append(["per-frame table", f"scores/{stems[v.name]}.csv"])
        frames = []
        for f in v.top_frames:
            labelled = ("" if v.labels is None else
                        " — labelled anomalous" if v.labels[f.index] else " — labelled normal")
            frames.append({
                "x": f.index,
                "caption": f"frame {f.index}: score {f.info.get('score', float('nan')):.3f}, fused PSNR "
                           f"{f.info['fused_psnr']:.2f} dB (frame {f.info['psnr_app']:.2f}, motion "
                           f"{f.info['psnr_mot']:.2f}){labelled}",
                "images": [{"label": {"frame": "input", "prediction": "prediction", "error": "error map"}.get(k, k),
                            "src": data_uri(b)} for k, b in f.images.items()],
            })
        sections.append({
            "name": v.name, "facts": vf,
            "chart": {"x": v.targets, "x_label": "frame", "y_label": "anomaly score", "time": False,
                      "series": [{"label": "score", "values": np.round(v.scores, 5), "kind": "score"}],
                      "shade": [] if v.labels is None else intervals_of(v.labels, np.arange(v.frames)),
                      "shade_label": "labelled anomaly", "marks": [f.index for f in v.top_frames]},
            "frames_title": "Frames predicted worst", "frames": frames,
        })
    from m2s2l_edge import __version__

    return {"title": f"m2s2l-edge evaluation {meta.get('title', '')}".strip(),
            "subtitle": str(meta.get("data") or ""), "facts": facts, "notes": notes, "roc": roc,
            "sections": sections, "footer": f"m2s2l-edge {__version__}; the same numbers are in results.json."}
