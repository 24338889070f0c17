"""Real-footage validation on OpenCV's vtest.avi (source frames 0–479 only; 480+ are held out and never decoded).

Three steps, each a sub-command:

    # 1. build the set (MNAD layout for `--dataset custom`, frame_labels.npy, vtest_meta.json)
    python benchmarks/vtest_validation.py build --out data/vtest [--seed 0] [--overwrite]
    # 2. the model-free peers, scored like the model (per-video min-max, frame-level AUC), per kind
    python benchmarks/vtest_validation.py baselines --data data/vtest --json benchmarks/results/vtest_baselines.json
    # 3. per-kind AUC of any `m2s2l-edge eval` output folder on that set (reads its scores/ and results.json)
    m2s2l-edge train --data data/vtest --dataset custom --preset small --epochs 20 --out runs/vtest
    m2s2l-edge eval --data data/vtest --dataset custom --weights runs/vtest/last.pt \
        --labels data/vtest/frame_labels.npy --out runs/vtest_eval
    python benchmarks/vtest_validation.py score --data data/vtest --eval runs/vtest_eval --json out.json

`appearance` puts each appearance video's AUC beside the size of its recoloured person at the model's resolution.
Two more for understanding a checkpoint: `diagnose` (every score variant, and how close the predictions are to
copying the last frame) and `ablate` (one part of the model removed at test time: either stream, the decomposition,
the memory read-out or query, the encoder levels). `--seed 1` builds the confirmation set: the same source frames,
other anomalies.

What a camera raises (`live`): per build and seed, train where no checkpoint exists, then the real `calibrate` on the
training frames, `watch --replay` on the test videos as one stream and `eval`; recall, false and cut events, normal
hours, delay, and watch's and eval's frame AUCs by one function (RESULTS.md, "Live detection"):

    python benchmarks/vtest_validation.py live --data data/vtest --data data/vtest1 --seeds 0 1 2 --work runs/live \
        [--score stream|paper] --json out.json

The set, its anomaly kinds and why train and test stay disjoint are described in benchmarks/footage/vtest.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

# The kinds of the held-out set (too fast, foreign object, odd appearance, frozen camera): "all" without the
# time-reversed videos, which no detector here separates from normal footage (traffic runs both ways in vtest).
HELD_OUT_KINDS = ("fast", "foreign_object", "appearance", "frozen")


def _auc_table(names, labels, scores, kinds) -> dict:
    from footage.vtest import per_kind_auc

    from m2s2l_edge.evaluation.protocol import frame_auc

    table = per_kind_auc(names, labels, scores, kinds)
    keep = [i for i, n in enumerate(names) if kinds[n] in HELD_OUT_KINDS]
    table["four_kinds"] = frame_auc([labels[i] for i in keep], [scores[i] for i in keep]).micro
    return table


def _test_labels(data: Path, clip_len: int):
    from m2s2l_edge.evaluation.datasets import load_test_set
    from m2s2l_edge.evaluation.protocol import drop_unpredicted

    videos, labels = load_test_set(data, "custom", labels_path=data / "frame_labels.npy")
    return videos, drop_unpredicted(labels, clip_len)


def cmd_build(args) -> dict:
    from footage.vtest import VtestConfig, build_vtest_set, find_vtest

    video = args.video or find_vtest()
    if video is None:
        raise FileNotFoundError("vtest.avi not found; install it with: apt-get install -y opencv-doc")
    meta = build_vtest_set(video, args.out, VtestConfig(seed=args.seed), overwrite=args.overwrite)
    return {"out": str(args.out), "test_videos": len(meta["test_videos"]),
            "anomalous_frames": sum(v["anomalous_frames"] for v in meta["test_videos"])}


def cmd_baselines(args) -> dict:
    from footage.model_free import BASELINES, baseline_scores
    from footage.vtest import kinds_by_video, load_meta

    from m2s2l_edge.data import discover
    from m2s2l_edge.scoring.video import min_max, quantile_floor

    kinds = kinds_by_video(load_meta(args.data))
    videos, labels = _test_labels(args.data, args.clip_len)
    train = discover(args.data, "custom", "train")
    names = [v.name for v in videos]
    rows = {}
    for baseline in BASELINES:
        raw = baseline_scores(baseline, videos, args.clip_len, args.size, train_videos=train)
        rows[baseline] = _auc_table(names, labels, [min_max(r) for r in raw], kinds)
        for q in FLOOR_QUANTILES:  # the same normalisation the model scores get, for a like-for-like comparison
            rows[f"{baseline}+floor{q:g}"] = _auc_table(names, labels, [quantile_floor(min_max(r), q) for r in raw],
                                                        kinds)
    return {"size": args.size, "clip_len": args.clip_len, "auc": rows}


def _eval_scores(data: Path, eval_dir: Path) -> tuple[dict, list[str], list, list]:
    """An `eval` output folder on build ``data``: its results.json, and per test video (natural order) the name,
    the labels of the scored frames and the scores it wrote."""
    result = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))
    videos, labels = _test_labels(data, int(result["clip_len"]))
    files = {row["name"]: eval_dir / row["scores_file"] for row in result["per_video"]}
    names = [v.name for v in videos]
    return result, names, labels, [np.load(files[n]) for n in names]


def cmd_score(args) -> dict:
    from footage.vtest import kinds_by_video, load_meta

    result, names, labels, scores = _eval_scores(args.data, args.eval)
    kinds = kinds_by_video(load_meta(args.data))
    return {"eval": str(args.eval), "source": result.get("source"), "micro_auc_reported": result["micro_auc"],
            "auc": _auc_table(names, labels, scores, kinds)}


def appearance_rows(meta: dict, names, labels, scores, image_size) -> list[dict]:
    """Per appearance video: its hue, how large the recoloured person is (median pixels at the stored size and at
    the model's ``image_size`` (H, W)) and how far up the frame (median row; higher up is farther away in vtest),
    and the frame AUC of ``scores`` on that video alone. ``names`` / ``labels`` / ``scores``: the scored frames of
    every test video, aligned. Raises ValueError for a build written before the region was recorded."""
    from footage.vtest import STORE_SIZE

    from m2s2l_edge.evaluation.protocol import frame_auc

    rows = []
    shrink = image_size[0] * image_size[1] / (STORE_SIZE[0] * STORE_SIZE[1])
    by_name = {v["name"]: v for v in meta["test_videos"]}
    for name, lab, score in zip(names, labels, scores, strict=True):
        video = by_name[name]
        if video["kind"] != "appearance":
            continue
        params = video["params"]
        if "region_px" not in params:
            raise ValueError("this build does not record the recoloured region's size; build it again "
                             "(`build --out NEW --seed K` writes the same frames, deterministically)")
        rows.append({"video": name, "hue": params["hue"], "region_px": params["region_px"],
                     "region_px_model": round(params["region_px"] * shrink, 1), "region_row": params["region_row"],
                     "auc": frame_auc([lab], [score]).micro})
    return rows


# A pixel of an anomalous frame belongs to the recoloured person when its saturation rose by more than this over
# the same pixel's median in the video's normal frames (the recolour sets saturation 235/255; vtest is near grey).
SATURATION_RISE = 0.2


def saturation(images: np.ndarray) -> np.ndarray:
    """max − min over colour of [-1, 1] images (N, 3, H, W), on the [0, 1] scale: (N, H, W)."""
    x = (np.asarray(images, dtype=np.float32) + 1) / 2
    return x.max(axis=1) - x.min(axis=1)


def colour_row(labels: np.ndarray, targets: np.ndarray, preds: np.ndarray) -> dict:
    """Does a model reproduce a recoloured person's colour? For one appearance video's scored frames (labels (N,),
    targets and frame predictions (N, 3, H, W) in [-1, 1]): at the pixels of anomalous frames whose saturation rose by
    more than :data:`SATURATION_RISE` over the normal frames' median, the target's and the prediction's mean
    saturation, the mean squared error there (over colour, on the [0, 1] scale) and the 99.9th percentile of the
    error at every other pixel of the same frames (what the worst window competes with). None where no pixel rose."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("a video needs normal and anomalous frames to find its recoloured pixels")
    import torch

    from m2s2l_edge.scoring.terms import error_map

    sat_t, sat_p = saturation(targets), saturation(preds)
    err = error_map(*(torch.from_numpy(np.asarray(x, np.float32)) for x in (preds, targets))).numpy()  # (N, H, W)
    risen = sat_t[labels] > np.median(sat_t[~labels], axis=0) + SATURATION_RISE
    row = {"px_per_frame": round(float(risen.sum() / labels.sum()), 1)}
    if not risen.any():
        return {**row, "target_saturation": None, "pred_saturation": None, "error_there": None,
                "error_elsewhere_p999": None}
    return {**row, "target_saturation": round(float(sat_t[labels][risen].mean()), 3),
            "pred_saturation": round(float(sat_p[labels][risen].mean()), 3),
            "error_there": round(float(err[labels][risen].mean()), 4),
            "error_elsewhere_p999": round(float(np.percentile(err[labels][~risen], 99.9)), 4)}


def context_row(video: dict) -> dict:
    """What else moves with one appearance video's labels (a :func:`_predictions` entry): the mean frame change in its
    anomalous and normal frames (a recoloured person may come with a busier or a quieter scene), and the video's own
    AUC of the unsmoothed worst-window error (its PSNR, the `patch_app` term, negated) and of the worst window of the
    saturation deficit."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(video["labels"]).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("a video needs normal and anomalous frames")
    change = np.asarray(video["terms"]["change"], np.float64)
    return {"change_anomalous": round(float(change[labels].mean()), 5),
            "change_normal": round(float(change[~labels].mean()), 5),
            "error_auc": round(float(roc_auc_score(labels, -np.asarray(video["terms"]["patch_app"]))), 3),
            "saturation_deficit_auc": round(float(roc_auc_score(labels, _saturation_worst(video))), 3)}


def _predictions(weights: Path, data: Path, threads: int, only=None, split: str = "test") -> list[dict]:
    """Checkpoint ``weights`` run once over build ``data``'s test videos (those named in ``only``, default all), or
    with ``split="train"`` its training video (labels all 0): per video its name, the labels of its scored frames,
    every term (:func:`m2s2l_edge.evaluation.run.frame_terms`), the targets and frame predictions themselves
    ((N, 3, H, W), [-1, 1]) for analyses that need the images, and the model's `patch` score settings and normal
    frame change as `eval` resolves them."""
    from m2s2l_edge.data import discover
    from m2s2l_edge.evaluation.protocol import drop_unpredicted
    from m2s2l_edge.evaluation.run import frame_terms
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.runtime.base import backend_geometry
    from m2s2l_edge.scoring.model import model_scoring

    backend = create_backend("torch", str(weights), threads=threads)
    scoring = model_scoring(getattr(backend, "metadata", None) or {}, backend_geometry(backend), score="patch",
                            dataset="custom")
    clip_len, size, patch = scoring.clip_len, scoring.image_size, scoring.patch
    if split == "train":
        videos = discover(data, "custom", "train")
        labels = drop_unpredicted([np.zeros(len(v), np.uint8) for v in videos], clip_len)
    else:
        videos, labels = _test_labels(data, clip_len)
    out = []
    for video, lab in zip(videos, labels, strict=True):
        if only is not None and video.name not in only:
            continue
        kept = {"targets": [], "preds": []}

        def keep(_idx, targets, frame_pred, _terms, kept=kept):
            kept["targets"].append(targets)
            kept["preds"].append(frame_pred)

        terms = frame_terms(backend, video, clip_len, size, 16, patch, keep=keep)
        out.append({"name": video.name, "labels": lab, "terms": terms, "patch": patch, "score": scoring.score,
                    "normal_change": scoring.normal_change,
                    "targets": np.concatenate(kept["targets"]), "preds": np.concatenate(kept["preds"])})
    return out


def cmd_appearance(args) -> dict:
    """How large each recoloured person is at the model's resolution, beside its video's AUC (an eval folder); with
    ``--weights``, also whether that checkpoint reproduces the person's new colour (:func:`colour_row`)."""
    from footage.vtest import load_meta

    result, names, labels, scores = _eval_scores(args.data, args.eval)
    rows = appearance_rows(load_meta(args.meta or args.data), names, labels, scores, result["image_size"])
    if args.weights is not None:
        colour = {v["name"]: {**colour_row(v["labels"], v["targets"], v["preds"]), **context_row(v)}
                  for v in _predictions(args.weights, args.data, args.threads, {r["video"] for r in rows})}
        rows = [{**r, **colour[r["video"]]} for r in rows]
    for r in rows:
        line = (f"{r['video']}: hue {r['hue']}, {r['region_px']} px stored = {r['region_px_model']} px at "
                f"{result['image_size'][0]} px, row {r['region_row']}: AUC {r['auc']:.3f}")
        if r.get("target_saturation") is not None:
            line += (f"; saturation {r['target_saturation']:.2f} in the frame, {r['pred_saturation']:.2f} predicted; "
                     f"error {r['error_there']:.4f} there, {r['error_elsewhere_p999']:.4f} at the 99.9th percentile "
                     "elsewhere")
        if "change_anomalous" in r:
            line += (f"; frame change {r['change_anomalous']:.4f} anomalous, {r['change_normal']:.4f} normal; AUC of "
                     f"the raw worst window {r['error_auc']:.3f}, of the saturation deficit "
                     f"{r['saturation_deficit_auc']:.3f}")
        print(line, file=sys.stderr)
    return {"eval": str(args.eval), "weights": None if args.weights is None else str(args.weights),
            "image_size": result["image_size"], "videos": rows}


# --- rescore: frame-term variants on the same predictions (issue 20, session 6; none adopted) ------------------


def local_mean_error(pred, target, k: int):
    """Squared error of the k×k box means of prediction and target ([-1, 1] tensors (N, 3, H, W)), mean over colour,
    on the [0, 1] scale: (N, H/k, W/k). Zero-mean detail errors cancel inside a box, a colour shift does not."""
    import torch.nn.functional as F

    return ((F.avg_pool2d(pred, k) - F.avg_pool2d(target, k)) / 2).pow(2).mean(dim=1)


def chroma_error(pred, target):
    """The squared error with its grey part (the mean over colour) removed, mean over colour: (N, H, W)."""
    d = (pred - target) / 2
    return (d - d.mean(dim=1, keepdim=True)).pow(2).mean(dim=1)


def saturation_deficit(pred, target):
    """max(0, saturation(target) − saturation(prediction))², the colour the prediction lacks: (N, H, W)."""
    def sat(x):
        return ((x + 1) / 2).amax(dim=1) - ((x + 1) / 2).amin(dim=1)

    return (sat(target) - sat(pred)).clamp(min=0).pow(2)


def shift_tolerant_error(pred, target, r: int):
    """Per pixel the smallest squared error (mean over colour, [0, 1] scale) of the prediction shifted by up to ``r``
    pixels each way (edges replicated) against the target: (N, H, W). A person predicted a pixel off costs little."""
    import torch
    import torch.nn.functional as F

    h, w = target.shape[-2:]
    padded = F.pad(pred, (r, r, r, r), mode="replicate")
    errors = [((padded[..., dy:dy + h, dx:dx + w] - target) / 2).pow(2).mean(dim=1)
              for dy in range(2 * r + 1) for dx in range(2 * r + 1)]
    return torch.stack(errors).amin(dim=0)


# name → (error map from (pred, target), window in pixels → window in map cells, how it joins the shipped score):
# "replace" patch_app by its worst window's PSNR, "geo" average the two in dB, "add w" / "floor add w" / "floor max"
# combine a per-video min-max of its (Gaussian σ 2) smoothed negative PSNR with the shipped `patch` score.
RESCORE_VARIANTS = {
    **{f"local mean k={k}": (lambda p, t, k=k: local_mean_error(p, t, k), lambda w, k=k: max(1, w // k), "replace")
       for k in (2, 4)},
    **{f"local mean k={k}, geo": (lambda p, t, k=k: local_mean_error(p, t, k), lambda w, k=k: max(1, w // k), "geo")
       for k in (2, 4)},
    **{f"{name}, {how}": (fn, lambda w: w, how)
       for name, fn in (("chroma", chroma_error), ("saturation deficit", saturation_deficit))
       for how in ("geo", "add 0.25", "add 0.5", "floor add 0.25", "floor max")},
    **{f"shift-tolerant r={r}": (lambda p, t, r=r: shift_tolerant_error(p, t, r), lambda w: w, "replace")
       for r in (1, 2)},
}


# --- calibrated on the training video (session 7; none adopted) ------------------------------------------------

ACTIVITY_FLOOR = 1e-3  # the frame change a log is taken of is floored here (a stalled frame changes by ~0)


def activity_fit(terms: dict, stall_ratio: float, activity: np.ndarray | None = None) -> tuple[float, float]:
    """(a, b) of patch_app ≈ a + b·ln(max(activity, :data:`ACTIVITY_FLOOR`)) by least squares over the frames that
    are not stalled: how much worse the worst window gets the more the scene moves. ``activity``: per frame (default
    the frame change itself)."""
    from m2s2l_edge.scoring.video import stalled

    change, worst = (np.asarray(terms[k], np.float64) for k in ("change", "patch_app"))
    act = change if activity is None else np.asarray(activity, np.float64)
    keep = ~stalled(change, stall_ratio)
    x = np.stack([np.ones(int(keep.sum())), np.log(np.maximum(act[keep], ACTIVITY_FLOOR))], axis=1)
    a, b = np.linalg.lstsq(x, worst[keep], rcond=None)[0]
    return float(a), float(b)


def activity_residual(terms: dict, ab: tuple[float, float], activity: np.ndarray | None = None) -> dict:
    """``terms`` with patch_app replaced by its residual against what the frame's activity predicts
    (:func:`activity_fit`; ``activity`` as there)."""
    a, b = ab
    act = np.maximum(np.asarray(terms["change"] if activity is None else activity, np.float64), ACTIVITY_FLOOR)
    return {**terms, "patch_app": np.asarray(terms["patch_app"], np.float64) - (a + b * np.log(act))}


def trimmed_activity(frames: np.ndarray, window: int, trim: float) -> np.ndarray:
    """The scene's activity without its busiest spots: per frame of consecutive ``frames`` ((N, 3, H, W), [-1, 1]),
    the mean absolute change from the frame before (mean over colour) in every ``window``-px window (stride
    window/2), averaged over the windows below their (1 − ``trim``) quantile. The first frame repeats the second's
    value (it has no frame before it here). (N,)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(frames, np.float32))
    change = (x[1:] - x[:-1]).abs().mean(dim=1, keepdim=True)  # (N-1, 1, H, W)
    windows = F.avg_pool2d(change, window, stride=max(1, window // 2)).flatten(1).double()  # (N-1, W)
    cut = torch.quantile(windows, 1.0 - trim, dim=1, keepdim=True)
    kept = torch.where(windows <= cut, windows, torch.zeros_like(windows))
    out = (kept.sum(dim=1) / (windows <= cut).sum(dim=1)).numpy()
    return np.concatenate([out[:1], out]) if len(out) else np.zeros(len(frames))


def colour_exceedance(values: np.ndarray, reference: np.ndarray, q: float) -> np.ndarray:
    """How far each frame's value lies beyond the ``q``-quantile of the reference (training) frames, in units of that
    quantile's distance from their median: max(0, (x − x_q) / (x_q − median)). Zero wherever the reference had as
    much."""
    ref = np.asarray(reference, np.float64)
    hi, mid = float(np.quantile(ref, q)), float(np.median(ref))
    return np.maximum(0.0, (np.asarray(values, np.float64) - hi) / max(hi - mid, 1e-12))


def _cached(entry: dict, key: str, compute) -> np.ndarray:
    """``entry[key]``, computed once by ``compute()`` (a per-frame series derived from a :func:`_predictions` entry,
    which several variants read)."""
    if key not in entry:
        entry[key] = np.asarray(compute(), np.float64)
    return entry[key]


def _saturation_worst(video: dict) -> np.ndarray:
    """The worst window of a :func:`_predictions` entry's saturation deficit per frame."""
    import torch

    from m2s2l_edge.scoring.terms import worst_window

    def compute():
        pred, target = (torch.from_numpy(np.asarray(video[k], np.float32)) for k in ("preds", "targets"))
        return worst_window(saturation_deficit(pred, target), video["patch"]).numpy()

    return _cached(video, "saturation_worst", compute)


def _activity_scores(video: dict, train: dict | None, trim: float | None = None) -> np.ndarray:
    """`patch` with the activity residual as its frame term: against the frame change, or with ``trim`` against the
    :func:`trimmed_activity`; (a, b) fitted on ``train`` (the training video), or on the video itself when None."""
    from m2s2l_edge.scoring.terms import TERMS
    from m2s2l_edge.scoring.video import video_scores

    def activity(entry: dict) -> np.ndarray | None:
        if trim is None:
            return None
        return _cached(entry, f"trimmed_activity_{trim}",
                       lambda: trimmed_activity(entry["targets"], entry["patch"], trim))

    cfg, fitted_on = video["score"], video if train is None else train
    ab = activity_fit(fitted_on["terms"], cfg.stall_ratio, activity(fitted_on))
    terms = {k: video["terms"][k] for k in TERMS}
    return video_scores(activity_residual(terms, ab, activity(video)), cfg, video["normal_change"])


def _colour_scores(video: dict, train: dict, q: float, w: float) -> np.ndarray:
    """min-max(shipped `patch` score + w · the smoothed :func:`colour_exceedance` of the saturation deficit's worst
    window against the training video's): a video with no exceedance keeps its scores."""
    from scipy.ndimage import gaussian_filter1d

    from m2s2l_edge.scoring.terms import TERMS
    from m2s2l_edge.scoring.video import min_max, video_scores

    cfg = video["score"]
    base = video_scores({k: video["terms"][k] for k in TERMS}, cfg, video["normal_change"])
    e = colour_exceedance(_saturation_worst(video), _saturation_worst(train), q)
    return min_max(base + w * gaussian_filter1d(e, cfg.smooth_sigma, mode="nearest"))


# name → scores from (test video, training video), both :func:`_predictions` entries of the same model.
CALIBRATED_VARIANTS = {
    "activity residual, training fit": _activity_scores,
    **{f"trimmed activity residual f={f}": (lambda video, train, f=f: _activity_scores(video, train, f))
       for f in (0.02, 0.1, 0.25)},
    "activity residual, per-video fit": lambda video, _train: _activity_scores(video, None),
    **{f"colour exceedance Q={q} w={w}": (lambda video, train, q=q, w=w: _colour_scores(video, train, q, w))
       for q in (0.99, 1.0) for w in (0.5, 1.0)},
}


def rescore_video(video: dict, variant: str, train: dict | None = None) -> np.ndarray:
    """One video's scores (a :func:`_predictions` entry, scored as `eval` scores it) with the frame term of
    ``variant`` (a key of :data:`RESCORE_VARIANTS` or :data:`CALIBRATED_VARIANTS`, which need ``train``, the same
    model's entry for the training video; or "shipped")."""
    import torch
    from scipy.ndimage import gaussian_filter1d

    from m2s2l_edge.scoring.terms import TERMS, psnr_of_mse, worst_window
    from m2s2l_edge.scoring.video import min_max, quantile_floor, video_scores

    cfg, normal_change = video["score"], video["normal_change"]
    terms = {k: video["terms"][k] for k in TERMS}
    if variant == "shipped":
        return video_scores(terms, cfg, normal_change)
    if variant in CALIBRATED_VARIANTS:
        if train is None:
            raise ValueError(f"{variant!r} is calibrated on the training video: pass its predictions")
        return CALIBRATED_VARIANTS[variant](video, train)
    error, window, how = RESCORE_VARIANTS[variant]
    pred, target = (torch.from_numpy(np.asarray(video[k], np.float32)) for k in ("preds", "targets"))
    db = psnr_of_mse(worst_window(error(pred, target), window(video["patch"]))).numpy().astype(np.float64)
    if how in ("replace", "geo"):
        terms["patch_app"] = db if how == "replace" else (terms["patch_app"] + db) / 2
        return video_scores(terms, cfg, normal_change)
    base, extra = video_scores(terms, cfg, normal_change), min_max(gaussian_filter1d(-db, 2.0, mode="nearest"))
    if how.startswith("floor"):
        extra = quantile_floor(extra, 0.5)
    if how == "floor max":
        return np.maximum(base, extra)
    w = float(how.split()[-1])
    return min_max((1 - w) * base + w * extra)


def reversal_profile(videos: list[dict], kinds: dict) -> dict[str, list[float]]:
    """Robust z-scores (each video's median and MAD) of the worst-window error in each time-reversed video, split into
    its first 4 reversed frames, the rest of the reversed stretch, the 4 frames after it and every other frame."""
    out = {"first_4_reversed": [], "rest_of_reversed": [], "4_after": [], "other": []}
    for v in videos:
        if kinds[v["name"]] != "wrong_direction" or not np.any(v["labels"]):
            continue
        e = -np.asarray(v["terms"]["patch_app"], np.float64)
        z = (e - np.median(e)) / (1.4826 * np.median(np.abs(e - np.median(e))) + 1e-12)
        idx = np.nonzero(v["labels"])[0]
        first, last = int(idx[0]), int(idx[-1])
        rest = np.ones(len(z), bool)
        rest[first:last + 5] = False
        for key, part in (("first_4_reversed", z[first:first + 4]), ("rest_of_reversed", z[first + 4:last + 1]),
                          ("4_after", z[last + 1:last + 5]), ("other", z[rest])):
            out[key] += part.tolist()
    return out


def cmd_rescore(args) -> dict:
    """Every :data:`RESCORE_VARIANTS` and :data:`CALIBRATED_VARIANTS` entry and the shipped `patch` score on each
    checkpoint × build (each model run once per build's test videos and once over its training video), means over
    them per kind; and where time-reversed videos score high."""
    import statistics

    from footage.vtest import kinds_by_video, load_meta

    variants = ["shipped", *RESCORE_VARIANTS, *CALIBRATED_VARIANTS]
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    reversal: dict[str, list[float]] = {}
    trains: dict[tuple[str, str], dict] = {}  # builds share their training frames: one pass per model
    for weights in args.weights:
        for data in args.data:
            kinds = kinds_by_video(load_meta(data))
            videos = _predictions(weights, data, args.threads)
            key = (str(weights), _training_digest(data))
            if key not in trains:
                (trains[key],) = _predictions(weights, data, args.threads, split="train")
            train = trains[key]
            names, labels = [v["name"] for v in videos], [v["labels"] for v in videos]
            for variant in variants:
                scores = [rescore_video(v, variant, train) for v in videos]
                rows[variant].append({"weights": str(weights), "data": str(data),
                                      **_auc_table(names, labels, scores, kinds)})
            for key, values in reversal_profile(videos, kinds).items():
                reversal.setdefault(key, []).extend(values)
            logging.getLogger("vtest").info("%s on %s: shipped all %.4f", weights, data, rows["shipped"][-1]["all"])
    keys = [k for k in rows["shipped"][0] if k not in ("weights", "data")]
    mean = {v: {k: statistics.mean(r[k] for r in rows[v]) for k in keys} for v in variants}
    return {"score": "patch", "mean": mean, "rows": rows,
            "reversal_z": {k: {"frames": len(v), "median": float(np.median(v)), "mean": float(np.mean(v))}
                           for k, v in reversal.items()}}


class CachedBackend:
    """A backend's outputs remembered per input batch, so score variants that need the same forward passes (one
    per patch size) run the model once."""

    def __init__(self, backend) -> None:
        self.backend, self.inputs, self.name = backend, backend.inputs, getattr(backend, "name", "model")
        self.cache: dict[bytes, dict] = {}

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        import hashlib

        key = hashlib.sha1(clips.tobytes()).digest()
        if key not in self.cache:
            self.cache[key] = {k: np.asarray(v).copy() for k, v in self.backend.run(clips).items()}
        return self.cache[key]


class CopyLastFrame:
    """The trivial predictor: next frame = last input frame, motion = 0. What a decoder that copies its full-
    resolution skip would score; the model's PSNRs are compared with it."""

    name = "copy_last_frame"

    def __init__(self, clip_len: int, size: int) -> None:
        from m2s2l_edge.runtime.base import TensorSpec

        self.inputs = (TensorSpec("clips", ("batch", clip_len, 3, size, size), "float32"),)

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        return {"frame_pred": clips[:, -1].copy(), "motion_pred": np.zeros_like(clips[:, -1])}


# Score variants compared by `diagnose` (all label-free; every one is chosen here, on this validation set).
PATCH_FRACTIONS = (1 / 16, 1 / 8, 1 / 4)
FLOOR_QUANTILES = (0.25, 0.5, 0.75)
MOTION_WEIGHTS = (0.25, 0.5)


def _variants(terms_by_patch: dict, lam: float) -> dict[str, tuple]:
    """name → (patch fraction whose terms it reads, ScoreConfig)."""
    from m2s2l_edge.config import ScoreConfig

    out = {"paper": (PATCH_FRACTIONS[1], ScoreConfig("paper", lam)),
           "paper_app_only": (PATCH_FRACTIONS[1], ScoreConfig("paper", 1.0)),
           "paper_motion_only": (PATCH_FRACTIONS[1], ScoreConfig("paper", 0.0)),
           "paper+stall": (PATCH_FRACTIONS[1], ScoreConfig("paper", lam, stall_ratio=0.1))}
    for f in terms_by_patch:
        for la in (lam, 1.0):
            tag = f"patch{f:.3f}" + ("" if la == lam else "_app_only")
            out[tag] = (f, ScoreConfig("patch", la, patch_fraction=f))
            out[f"{tag}+stall"] = (f, ScoreConfig("patch", la, patch_fraction=f, stall_ratio=0.1))
            for sigma in (2.0, 4.0):
                out[f"{tag}+stall+smooth{sigma:g}"] = (f, ScoreConfig("patch", la, patch_fraction=f,
                                                                      stall_ratio=0.1, smooth_sigma=sigma))
    for sigma in (2.0, 4.0):
        out[f"paper+stall+smooth{sigma:g}"] = (PATCH_FRACTIONS[1], ScoreConfig("paper", lam, stall_ratio=0.1,
                                                                               smooth_sigma=sigma))
    # The quantile floor on the published score and on the candidates that were best without it.
    fine = f"patch{PATCH_FRACTIONS[0]:.3f}"
    for base in ("paper", "paper+stall", "paper+stall+smooth2", f"{fine}_app_only+stall",
                 f"{fine}_app_only+stall+smooth2", f"{fine}+stall+smooth2"):
        if base in out:
            f, cfg = out[base]
            for q in FLOOR_QUANTILES:
                out[f"{base}+floor{q:g}"] = (f, cfg.replace(floor_quantile=q))
    # The two-sided motion term on top (ScoreConfig.motion_weight), with and without the floor.
    for base in list(out):
        if base.startswith((f"{fine}_app_only+stall+smooth2", "paper+stall+smooth2")):
            f, cfg = out[base]
            for w in MOTION_WEIGHTS:
                out[f"{base}+motion{w:g}"] = (f, cfg.replace(motion_weight=w))
    return out


def _motion_reference(torch_backend, data: Path, clip_len: int, size: int) -> float:
    """The motion term's reference: the one the checkpoint stored, else taken from the set's training frames the
    way `train` takes it (checkpoints written before train stored it)."""
    from m2s2l_edge.data import ClipDataset, discover
    from m2s2l_edge.scoring.terms import normal_change

    stored = torch_backend.metadata.get("normal_change")
    return stored if stored is not None else normal_change(ClipDataset(discover(data, "custom", "train"), clip_len,
                                                                       size))


def cmd_diagnose(args) -> dict:
    """Per-kind AUC of score variants for one checkpoint, and how close its predictions are to copying."""
    from footage.vtest import kinds_by_video, load_meta

    from m2s2l_edge.evaluation.run import frame_terms
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.runtime.base import backend_geometry
    from m2s2l_edge.scoring.video import video_scores

    kinds = kinds_by_video(load_meta(args.data))
    torch_backend = create_backend("torch", str(args.weights), threads=args.threads)
    model = CachedBackend(torch_backend)
    clip_len, size = backend_geometry(model)
    reference = _motion_reference(torch_backend, args.data, clip_len, size[0])
    videos, labels = _test_labels(args.data, clip_len)
    names = [v.name for v in videos]
    copy = CopyLastFrame(clip_len, size[0])
    terms = {f: [frame_terms(model, v, clip_len, size, 16, max(1, round(f * size[0]))) for v in videos]
             for f in PATCH_FRACTIONS}
    copy_terms = [frame_terms(copy, v, clip_len, size, 16, max(1, round(PATCH_FRACTIONS[1] * size[0])))
                  for v in videos]
    if args.terms is not None:
        arrays = {f"{n}/{f:.3f}/{k}": t[k] for f, ts in terms.items() for n, t in zip(names, ts, strict=True)
                  for k in t}
        arrays.update({f"{n}/copy/{k}": t[k] for n, t in zip(names, copy_terms, strict=True) for k in t})
        np.savez_compressed(args.terms, **arrays)
    table = {}
    for name, (f, cfg) in _variants(terms, args.lam).items():
        table[name] = _auc_table(names, labels, [video_scores(t, cfg, reference) for t in terms[f]], kinds)
    from m2s2l_edge.config import ScoreConfig

    table["copy_last_frame.paper"] = _auc_table(
        names, labels, [video_scores(t, ScoreConfig("paper", args.lam)) for t in copy_terms], kinds)
    mid = terms[PATCH_FRACTIONS[1]]
    model_app = np.concatenate([t["psnr_app"] for t in mid])
    copy_app = np.concatenate([t["psnr_app"] for t in copy_terms])
    copying = {
        "corr_psnr_app_model_vs_copy": float(np.corrcoef(model_app, copy_app)[0, 1]),
        "mean_psnr_app_model": float(model_app.mean()),
        "mean_psnr_app_copy": float(copy_app.mean()),
        "mean_psnr_mot_model": float(np.concatenate([t["psnr_mot"] for t in mid]).mean()),
    }
    return {"weights": str(args.weights), "image_size": list(size), "lambda": args.lam, "normal_change": reference,
            "copying": copying,
            "auc": table}


# Test-time interventions of `ablate`: each removes one part of a trained M²S²L's forward pass.
INTERVENTIONS = ("none", "spatial stream zeroed", "temporal stream zeroed", "decomposition: specific parts swapped",
                 "memory read-out zeroed", "memory query zeroed (read-out only)", "encoder levels zeroed")


class Intervened:
    """A trained M²S²L whose forward pass has one part removed (``mode``, one of :data:`INTERVENTIONS`), as a
    backend.

    The spatial stream is zeroed where it leaves the encoders (every encoder map, so both the fused features and
    the decoders' finer levels); the temporal stream before the fusion; the decomposition's appearance- and
    motion-specific parts trade places (what a decomposition that specialised nothing would not notice); the memory
    banks' output is [normalised query, read-out] (MNAD) or the read-out alone, and one half is zeroed in every bank;
    the encoder levels are the decoders' finer inputs. Interventions that do not apply to a model (the query of a
    model whose decoders get the read-out only) are skipped by ``applicable``."""

    def __init__(self, torch_backend) -> None:
        import torch

        self.inputs, self.name, self.mode = torch_backend.inputs, "intervened", "none"
        self.model = model = torch_backend.model
        if model.memories is None or model.decomposition is None:
            raise ValueError("ablate needs a model with memory banks and the decomposition (ablation M4)")
        banks = [*model.memories, *(model.level_memories or [])]

        def memory_hook(module, args, output):
            read, losses = output
            if not module.with_query:
                return (torch.zeros_like(read) if self.mode == "memory read-out zeroed" else read), losses
            dim = read.shape[1] // 2
            if self.mode == "memory read-out zeroed":
                read = torch.cat([read[:, :dim], torch.zeros_like(read[:, dim:])], dim=1)
            elif self.mode == "memory query zeroed (read-out only)":
                read = torch.cat([torch.zeros_like(read[:, :dim]), read[:, dim:]], dim=1)
            return read, losses

        def decomposition_hook(module, args, output):
            if self.mode == "decomposition: specific parts swapped":
                return output[0], output[2], output[1]
            return output

        for bank in banks:
            bank.register_forward_hook(memory_hook)
        model.decomposition.register_forward_hook(decomposition_hook)
        self.with_query = all(bank.with_query for bank in banks)
        temporal, maps, levels = model._temporal, model._spatial_maps, model._levels
        model._temporal = lambda clip: self._maybe_zero(temporal(clip), "temporal stream zeroed")
        model._spatial_maps = lambda stacked: [self._maybe_zero(f, "spatial stream zeroed") for f in maps(stacked)]
        model._levels = lambda m, out: [None if f is None else self._maybe_zero(f, "encoder levels zeroed")
                                        for f in levels(m, out)]

    def applicable(self, mode: str) -> bool:
        if mode == "memory query zeroed (read-out only)":
            return self.with_query
        if mode == "encoder levels zeroed":
            return bool(self.model.cfg.level_patch_sizes)
        return True

    def _maybe_zero(self, features, mode: str):
        return features * 0 if self.mode == mode else features

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            frame, motion = self.model.predict(torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32)))
        return {"frame_pred": frame.numpy(), "motion_pred": motion.numpy()}


def cmd_ablate(args) -> dict:
    """Frame PSNR on normal frames and the default score's AUC with each part of the model zeroed at test time."""
    from footage.vtest import kinds_by_video, load_meta

    from m2s2l_edge.config import get_score
    from m2s2l_edge.evaluation.run import frame_terms
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.runtime.base import backend_geometry
    from m2s2l_edge.scoring.video import video_scores

    kinds = kinds_by_video(load_meta(args.data))
    torch_backend = create_backend("torch", str(args.weights), threads=args.threads)
    model = Intervened(torch_backend)
    clip_len, size = backend_geometry(model)
    videos, labels = _test_labels(args.data, clip_len)
    names = [v.name for v in videos]
    score = get_score("patch")
    reference = _motion_reference(torch_backend, args.data, clip_len, size[0])
    rows = {}
    for mode in filter(model.applicable, INTERVENTIONS):
        model.mode = mode
        terms = [frame_terms(model, v, clip_len, size, 16, score.patch_size(size[0])) for v in videos]
        normal = np.concatenate([t["psnr_app"][lab == 0] for t, lab in zip(terms, labels, strict=True)])
        normal_mot = np.concatenate([t["psnr_mot"][lab == 0] for t, lab in zip(terms, labels, strict=True)])
        rows[mode] = {"psnr_app_normal_frames": float(normal.mean()),
                      "psnr_mot_normal_frames": float(normal_mot.mean()),
                      "auc": _auc_table(names, labels, [video_scores(t, score, reference) for t in terms], kinds)}
        logging.getLogger("vtest").info("%s: frame PSNR %.2f dB, AUC %.3f", mode, normal.mean(),
                                        rows[mode]["auc"]["all"])
    return {"weights": str(args.weights), "score": "patch", "interventions": rows}


# --- live: the real calibrate and watch commands on each build, beside eval ------------------------------------

# How an event is matched to an anomalous segment (our protocol; no benchmark publishes one for this set): an event
# counts for a segment when its frames overlap the segment or the GRACE frames after it, because the model still sees
# the last anomalous frame in its T input frames and the tracker in its smoothing window after the labels end. The
# same span after every cut between two test videos in the stream (the camera "jumps": no normal footage) is set
# apart: events that start there are counted as cut events, and those frames as no normal footage.
LIVE_TRAIN = "train.mkv"
LIVE_STREAM = "stream.mkv"


def _write_stream(videos, out: Path, fps: float) -> None:
    """Video sources (frame folders) → one lossless FFV1 video at ``fps``, checked to decode to the same pixels."""
    import subprocess

    import cv2

    if out.is_file() and out.with_suffix(".ok").is_file():
        return
    h, w = videos[0].read(0).shape[:2]
    tmp = out.with_name(out.stem + ".tmp.mkv")
    cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", f"{fps:g}", "-i", "-", "-c:v", "ffv1", "-pix_fmt", "bgr0", str(tmp)]
    with subprocess.Popen(cmd, stdin=subprocess.PIPE) as proc:
        for v in videos:
            for frame in v.iter_frames():
                proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        proc.stdin.close()
        if proc.wait() != 0:
            raise OSError(f"ffmpeg could not write {tmp}")
    cap = cv2.VideoCapture(str(tmp))
    for v in videos:  # lossless: watch reads exactly the pixels eval reads from the JPEGs
        for i, frame in enumerate(v.iter_frames()):
            ok, bgr = cap.read()
            if not ok or not np.array_equal(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), frame):
                raise ValueError(f"{tmp}: frame {i} of {v.name} does not decode to the same pixels")
    cap.release()
    tmp.replace(out)
    out.with_suffix(".ok").write_text("verified\n")


def _build_streams(data: Path, work: Path, fps: float) -> dict:
    """The build's training frames (the calibration footage) and its test videos concatenated in their natural order
    (one stream), as lossless videos; and where each test video starts in the stream."""
    from footage.vtest import load_meta

    from m2s2l_edge.data import discover
    from m2s2l_edge.evaluation.datasets import load_test_set

    meta = load_meta(data)
    videos, labels = load_test_set(data, "custom", labels_path=data / "frame_labels.npy")  # every frame
    work.mkdir(parents=True, exist_ok=True)
    _write_stream(discover(data, "custom", "train"), work / LIVE_TRAIN, fps)
    _write_stream(videos, work / LIVE_STREAM, fps)
    starts = np.cumsum([0, *(len(v) for v in videos)])
    return {"names": [v.name for v in videos], "labels": [np.asarray(lab).reshape(-1) for lab in labels],
            "starts": starts,
            "kinds": {v["name"]: v["kind"] for v in meta["test_videos"]}}


def _training_digest(data: Path) -> str:
    """sha256 over a build's training frames: builds with the same training frames (every build of this set: they
    differ only in their test videos) train the same model for a seed, so it is trained once."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted((data / "training").rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(data)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _cli(*args, log: Path) -> None:
    """One m2s2l-edge command, as a user runs it; its output kept in ``log``."""
    import subprocess

    cmd = [sys.executable, "-m", "m2s2l_edge", *map(str, args)]
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ m2s2l-edge " + " ".join(map(str, args)) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise ValueError(f"m2s2l-edge {args[0]} failed (exit {proc.returncode}); see {log}")


def _segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Runs of anomalous frames: (first, last) inclusive."""
    lab = np.r_[0, np.asarray(labels).astype(np.int8), 0]
    edges = np.flatnonzero(np.diff(lab))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def frame_aucs(names, labels, scores, kinds) -> dict:
    """The AUC rows of the live table, for watch and for eval alike: micro AUC over the scored frames (frames T.. of
    each video) of every video and per kind (:func:`_auc_table`)."""
    return _auc_table(names, labels, scores, kinds)


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def live_row(stream: dict, events: list[dict], watch_scores: dict[str, np.ndarray], eval_scores: list | None, *,
             fps: float, clip_len: int, window: int, camera_scores: list | None = None) -> dict:
    """Event- and frame-level figures of one model's live run (see the protocol note above ``LIVE_TRAIN``)."""
    names, labels, starts, kinds = stream["names"], stream["labels"], stream["starts"], stream["kinds"]
    grace = clip_len + window
    segments = []  # (stream first, stream last, kind)
    for v, lab in enumerate(labels):
        segments += [(starts[v] + a, starts[v] + b, kinds[names[v]]) for a, b in _segments(lab)]
    cuts = [(int(c), int(c) + grace) for c in starts[1:-1]]
    starts_msgs = {m["id"]: m for m in events if m.get("kind") == "anomaly" and m["state"] == "start"}
    spans = {}
    for m in events:
        if m.get("kind") == "anomaly" and m["id"] in starts_msgs:
            spans[m["id"]] = (m["first"]["frame"], max(spans.get(m["id"], (0, -1))[1], m["last"]["frame"]))
    by_frame = dict(zip(watch_scores["frame"].astype(int).tolist(), watch_scores["score"].astype(float).tolist(),
                        strict=True))
    peaks: dict[str, list[float]] = {}  # the largest smoothed score within each segment and its grace, per kind
    for s0, s1, kind in segments:
        peaks.setdefault(kind, []).append(max(by_frame.get(f, -np.inf) for f in range(s0, s1 + grace + 1)))
    hits: dict[int, list[float]] = {}
    false_events, cut_events = [], []
    for eid, (a, b) in spans.items():
        matched = [i for i, (s0, s1, _) in enumerate(segments) if a <= s1 + grace and b >= s0]
        for i in matched:
            hits.setdefault(i, []).append(starts_msgs[eid]["last"]["stream_time"] - segments[i][0] / fps)
        if not matched:
            (cut_events if any(c0 <= a < c1 for c0, c1 in cuts) else false_events).append(a)
    total = len(labels) and int(starts[-1])
    normal = np.ones(total, bool)
    for s0, s1, _ in segments:
        normal[s0:min(total, s1 + grace + 1)] = False
    for c0, c1 in cuts:
        normal[c0:min(total, c1)] = False
    normal[:clip_len] = False
    hours = normal.sum() / fps / 3600.0
    delays = [min(d) for d in hits.values()]
    four = [i for i, seg in enumerate(segments) if seg[2] in HELD_OUT_KINDS]
    # Frame AUCs, one function for both: watch's calibrated smoothed score and eval's per-video score, on the frames
    # eval scores (frames T.. of each video).
    w_scores = [np.array([by_frame[int(starts[v]) + f] for f in range(clip_len, len(lab))])
                for v, lab in enumerate(labels)]
    kept = [np.asarray(lab)[clip_len:] for lab in labels]
    return {
        "segments": len(segments), "detected": len(hits),
        "recall": len(hits) / len(segments),
        "segments_four_kinds": len(four), "detected_four_kinds": sum(i in hits for i in four),
        "recall_four_kinds": sum(i in hits for i in four) / len(four),
        "per_kind": {k: f"{sum(i in hits for i, s in enumerate(segments) if s[2] == k)}/"
                        f"{sum(s[2] == k for s in segments)}" for k in dict.fromkeys(s[2] for s in segments)},
        "false_events": len(false_events), "false_event_frames": false_events, "cut_events": len(cut_events),
        "normal_hours": hours, "false_events_per_hour": len(false_events) / hours if hours else None,
        "median_delay_s": float(np.median(delays)) if delays else None,
        "segment_peak_median": {k: float(np.median(v)) for k, v in peaks.items()},
        "normal_peak": float(max((by_frame[f] for f in np.flatnonzero(normal) if f in by_frame), default=np.nan)),
        "auc_watch": frame_aucs(names, kept, w_scores, kinds),
        "auc_eval": None if eval_scores is None else frame_aucs(names, kept, eval_scores, kinds),
        # eval --calibration: each video scored as the calibrated camera scores it, smoothing restarted per video
        "auc_eval_camera": None if camera_scores is None else frame_aucs(names, kept, camera_scores, kinds),
    }


def live_markdown(rows: list[dict]) -> str:
    """The live table for RESULTS.md: one row per build and seed, then each build's totals over its seeds."""
    head = ("| build | seed | threshold | segments detected (all / four kinds) | per kind | false events (normal h) | "
            "false / h | cut events | median delay s | frame AUC watch all / four | frame AUC eval all / four | "
            "frame AUC eval --calibration all / four |")

    def camera(rs: list[dict], kind: str) -> str:
        values = [r["auc_eval_camera"][kind] for r in rs if r.get("auc_eval_camera")]
        return f"{np.mean(values):.3f}" if len(values) == len(rs) else "–"

    lines = [head, "|---" * (head.count("|") - 1) + "|"]

    def cells(r: dict) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in r["per_kind"].items())
        fph = "–" if r["false_events_per_hour"] is None else f"{r['false_events_per_hour']:.0f}"
        delay = "–" if r["median_delay_s"] is None else f"{r['median_delay_s']:.1f}"
        return (f"{r['threshold']:.2f} | {r['detected']}/{r['segments']} / {r['detected_four_kinds']}/"
                f"{r['segments_four_kinds']} | {kinds} | {r['false_events']} ({r['normal_hours']:.3f}) | {fph} | "
                f"{r['cut_events']} | {delay} | {r['auc_watch']['all']:.3f} / {r['auc_watch']['four_kinds']:.3f} | "
                f"{r['auc_eval']['all']:.3f} / {r['auc_eval']['four_kinds']:.3f} | "
                f"{camera([r], 'all')} / {camera([r], 'four_kinds')} |")

    for r in rows:
        lines.append(f"| {r['build']} | {r['seed']} | {cells(r)}")
    for build in dict.fromkeys(r["build"] for r in rows):
        mine = [r for r in rows if r["build"] == build]
        det, seg = sum(r["detected"] for r in mine), sum(r["segments"] for r in mine)
        det4, seg4 = sum(r["detected_four_kinds"] for r in mine), sum(r["segments_four_kinds"] for r in mine)
        fe, hours = sum(r["false_events"] for r in mine), sum(r["normal_hours"] for r in mine)
        recall = f"**{det}/{seg} = {det / seg:.2f} / {det4}/{seg4} = {det4 / seg4:.2f}**"
        lines.append(f"| **{build}** | all | | {recall} | | "
                     f"{fe} ({hours:.3f}) | {fe / hours:.0f} | {sum(r['cut_events'] for r in mine)} | | "
                     f"{np.mean([r['auc_watch']['all'] for r in mine]):.3f} / "
                     f"{np.mean([r['auc_watch']['four_kinds'] for r in mine]):.3f} | "
                     f"{np.mean([r['auc_eval']['all'] for r in mine]):.3f} / "
                     f"{np.mean([r['auc_eval']['four_kinds'] for r in mine]):.3f} | "
                     f"{camera(mine, 'all')} / {camera(mine, 'four_kinds')} |")
    return "\n".join(lines)


def _run_live(args, model: list, data: Path, build: Path, out: Path, log: Path) -> None:
    """The three commands of one live run, as a user types them."""
    _cli("calibrate", *model, "--score", args.score, "--source", build / LIVE_TRAIN, "--out",
         out / "cam.calib.json", "--overwrite", "--json", out / "calibration.json", log=log)
    (out / "events.jsonl").unlink(missing_ok=True)
    _cli("watch", *model, "--score", args.score, "--calibration", out / "cam.calib.json", "--source",
         build / LIVE_STREAM, "--replay", "--events", out / "events.jsonl", "--scores", out / "scores.csv",
         "--json", out / "summary.json", log=log)
    _cli("eval", *model, "--data", data, "--dataset", "custom", "--labels", data / "frame_labels.npy",
         "--out", out / "eval", "--overwrite", "--no-plots", log=log)
    _eval_camera(model, data, out, log)


def _eval_camera(model: list, data: Path, out: Path, log: Path) -> None:
    """eval with the run's calibration: every test video scored as the calibrated camera scores it."""
    _cli("eval", *model, "--data", data, "--dataset", "custom", "--labels", data / "frame_labels.npy",
         "--calibration", out / "cam.calib.json", "--out", out / "eval_camera", "--overwrite", "--no-plots", log=log)


def cmd_live(args) -> dict:
    """Per build and seed: train (unless the checkpoint exists), calibrate on the training frames, replay the test
    videos as one stream through watch, eval the same model; the live table."""
    import time

    fps = args.fps
    rows = []
    trained: dict[tuple[str, int], Path] = {}  # (training frames' digest, seed) → the run that trained it
    for k, data in enumerate(args.data):
        digest = _training_digest(data)
        build = args.work / f"b{k}"
        stream = _build_streams(data, build, fps)
        for seed in args.seeds:
            run = args.work / f"b{k}_s{seed}"
            log = run / "live.log"
            run.mkdir(parents=True, exist_ok=True)
            weights = trained.get((digest, seed), run) / "last.pt"
            if not weights.is_file():
                fg = () if args.foreground_weight is None else ("--foreground-weight", args.foreground_weight)
                _cli("train", "--data", data, "--dataset", "custom", "--preset", args.preset, "--epochs", args.epochs,
                     "--seed", seed, "--out", run, "--overwrite", *fg, log=log)
            trained.setdefault((digest, seed), weights.parent)
            out = run / f"live_{args.score}"
            out.mkdir(exist_ok=True)
            tic = time.perf_counter()
            model = ["--weights", weights, "--threads", args.threads]
            if not (args.reanalyse and (out / "eval" / "results.json").is_file()):
                _run_live(args, model, data, build, out, log)
            elif not (out / "eval_camera" / "results.json").is_file():  # a run from before eval --calibration
                _eval_camera(model, data, out, log)
            cal = json.loads((out / "calibration.json").read_text(encoding="utf-8"))
            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
            events = [json.loads(x) for x in (out / "events.jsonl").read_text(encoding="utf-8").splitlines()]
            eval_scores = [np.load(out / "eval" / "scores" / f"{n}.npy") for n in stream["names"]]
            camera_scores = [np.load(out / "eval_camera" / "scores" / f"{n}.npy") for n in stream["names"]]
            row = live_row(stream, events, _read_csv(out / "scores.csv"), eval_scores, fps=fps,
                           clip_len=summary["model"]["clip_len"], window=cal["window"], camera_scores=camera_scores)
            result = json.loads((out / "eval" / "results.json").read_text(encoding="utf-8"))
            row.update(build=k, data=str(data), seed=seed, weights=str(weights), score=args.score,
                       threshold=cal["threshold"], calibration_warning=cal["warning"], eval_score=result["score"],
                       eval_micro_auc=result["micro_auc"], seconds=time.perf_counter() - tic)
            logging.getLogger("vtest").info(
                "build %d seed %d: recall %d/%d (four kinds %d/%d), %d false events in %.3f h, %d cut events, "
                "AUC watch %.3f eval %.3f eval --calibration %.3f", k, seed, row["detected"], row["segments"],
                row["detected_four_kinds"], row["segments_four_kinds"], row["false_events"], row["normal_hours"],
                row["cut_events"], row["auc_watch"]["all"], row["auc_eval"]["all"], row["auc_eval_camera"]["all"])
            rows.append(row)
    table = live_markdown(rows)
    print(table, file=sys.stderr)
    return {"score": args.score, "fps": fps, "rows": rows, "markdown": table}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the validation set")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--video", type=Path, default=None, help="vtest.avi (default: opencv-doc's)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--overwrite", action="store_true")
    s = sub.add_parser("baselines", help="frame differencing and the two-sided motion statistic")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--size", type=int, default=64, help="resolution the baselines read frames at")
    s.add_argument("--clip-len", type=int, default=4, help="T: frames 0..T-1 of each video are not scored")
    e = sub.add_parser("score", help="per-kind AUC of an eval output folder")
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--eval", type=Path, required=True)
    ap = sub.add_parser("appearance", help="per appearance video: the recoloured person's size and the video's AUC")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--eval", type=Path, required=True)
    ap.add_argument("--meta", type=Path, default=None,
                    help="a rebuild of the same build (same --seed) whose metadata records the region's size")
    ap.add_argument("--weights", type=Path, default=None,
                    help="the checkpoint the eval folder scored: also report whether it reproduces the new colour")
    ap.add_argument("--threads", type=int, default=1)
    d = sub.add_parser("diagnose", help="score variants and the copy-last-frame comparison for one checkpoint")
    d.add_argument("--data", type=Path, required=True)
    d.add_argument("--weights", type=Path, required=True)
    d.add_argument("--lam", type=float, default=0.5)
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("--terms", type=Path, default=None, help="also save every per-frame term here (.npz)")
    rs = sub.add_parser("rescore", help="frame-term variants (local means, colour, shift-tolerant, and calibrated on "
                        "the training video: activity residual, colour exceedance) on the same predictions, and "
                        "where time-reversed videos score")
    rs.add_argument("--data", type=Path, action="append", required=True, help="a build (repeat)")
    rs.add_argument("--weights", type=Path, action="append", required=True, help="a checkpoint (repeat)")
    rs.add_argument("--threads", type=int, default=1)
    a = sub.add_parser("ablate", help="zero one part of a trained model at test time: what carries the prediction")
    a.add_argument("--data", type=Path, required=True)
    a.add_argument("--weights", type=Path, required=True)
    a.add_argument("--threads", type=int, default=1)
    li = sub.add_parser("live", help="calibrate + watch --replay on each build's test stream, beside eval")
    li.add_argument("--data", type=Path, action="append", required=True, help="a build (repeat: build 0, build 1)")
    li.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    li.add_argument("--work", type=Path, required=True, help="runs b<K>_s<SEED>/ (trained here when missing)")
    li.add_argument("--preset", default="small")
    li.add_argument("--epochs", type=int, default=20)
    li.add_argument("--foreground-weight", type=float, default=None,
                    help="train's --foreground-weight for the models trained here (default: train's recipe)")
    li.add_argument("--score", default="stream", help="the watch / calibrate score (stream or paper)")
    li.add_argument("--fps", type=float, default=10.0, help="vtest.avi's frame rate")
    li.add_argument("--threads", type=int, default=1)
    li.add_argument("--reanalyse", action="store_true",
                    help="read the outputs an earlier run left in --work instead of running the commands again")
    for p in (b, s, e, ap, d, rs, a, li):
        p.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        commands = {"build": cmd_build, "baselines": cmd_baselines, "score": cmd_score, "appearance": cmd_appearance,
                    "diagnose": cmd_diagnose, "rescore": cmd_rescore, "ablate": cmd_ablate, "live": cmd_live}
        result = commands[args.command](args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from m2s2l_edge.efficiency.benchmarking import machine_info

    result = {"command": " ".join(sys.argv), **result, "machine": machine_info()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        from m2s2l_edge.io import atomic_write_text

        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
