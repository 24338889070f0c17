"""Anomaly scoring: PSNR of both streams, the λ-weighted score, per-video min-max normalisation (docs/DESIGN.md §6).

Two scores (``ScoreConfig.method`` in :mod:`m2s2l_edge.config`):

* ``paper`` — the published one: PSNR of the whole predicted frame and motion, fused with λ, min-max per video;
* ``patch`` — our addition: the same with the PSNR of the *worst* patch instead of the frame mean (a person-sized
  anomaly moves a frame-mean error by a few percent and a patch error many times over), and frames where the camera
  stalled (the frame repeats the one before it) flagged as anomalous and kept out of the min-max, where their
  near-perfect prediction would otherwise squeeze every other frame of the video.

All functions are pure and work on numpy arrays or torch tensors of images in model units ([-1, 1] frames).
"""

from __future__ import annotations

import numpy as np
import torch

from m2s2l_edge.config import DEFAULT_LAMBDA, PAPER_LAMBDA

# Where a resolved λ came from (the second value of ``resolve_lambda``; exports record it as ``lambda_source``).
STORED = "stored in the model"


def psnr(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Per-sample PSNR = 10·log10(1 / MSE) on images mapped from [-1, 1] to [0, 1]. (B, ...) → (B,).

    Used for frames and, with the same MAX, for frame differences (a difference of [-1, 1] frames is mapped by the
    same factor 1/2, so MAX stays 1 on the [0, 1] scale: our choice for the motion PSNR).
    """
    mse = ((pred.float() - target.float()) / 2).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / (mse + eps))


def patch_psnr(pred: torch.Tensor, target: torch.Tensor, patch: int, eps: float = 1e-10) -> torch.Tensor:
    """Per-sample PSNR of the worst ``patch``×``patch`` window (stride patch/2), same units as :func:`psnr`.

    Shapes: (B, C, H, W) → (B,). A patch as large as the image gives :func:`psnr`.
    """
    import torch.nn.functional as F

    err = ((pred.float() - target.float()) / 2).pow(2).mean(dim=1, keepdim=True)  # (B, 1, H, W)
    patch = max(1, min(patch, err.shape[-2], err.shape[-1]))
    worst = F.avg_pool2d(err, patch, stride=max(1, patch // 2)).flatten(1).amax(dim=1)  # (B,)
    return 10 * torch.log10(1.0 / (worst + eps))


def frame_change(frame: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Mean absolute change between consecutive frames, (B, C, H, W) pairs → (B,), in [-1, 1] units."""
    return (frame.float() - previous.float()).abs().flatten(1).mean(dim=1)


def stalled(change: np.ndarray, ratio: float) -> np.ndarray:
    """Frames that (nearly) repeat the frame before them: change below ``ratio`` × the video's median change.

    A live camera's sensor noise alone moves every frame; a stalled feed repeats a frame exactly (0) or up to
    re-encoding noise. Relative to the video's own median, so the rule needs no calibration per camera.
    """
    change = np.asarray(change, dtype=np.float64)
    if change.size == 0:
        return np.zeros(0, dtype=bool)
    return change < ratio * float(np.median(change))


def fused_psnr(psnr_app: np.ndarray, psnr_mot: np.ndarray, lam: float) -> np.ndarray:
    """λ·PSNR_app + (1−λ)·PSNR_mot (higher = more normal)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam}")
    return lam * np.asarray(psnr_app, dtype=np.float64) + (1 - lam) * np.asarray(psnr_mot, dtype=np.float64)


def min_max(x: np.ndarray) -> np.ndarray:
    """Min-max normalise to [0, 1]; a constant sequence maps to zeros."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    return np.zeros_like(x) if hi - lo <= 0 else (x - lo) / (hi - lo)


def quantile_floor(score: np.ndarray, q: float) -> np.ndarray:
    """Scores in [0, 1] → scores below their ``q``-quantile set to 0, the rest mapped linearly onto [0, 1] (the
    maximum stays where it is). ``q`` = 0 returns the input; a video with no spread above the quantile maps to 0."""
    score = np.asarray(score, dtype=np.float64)
    if q <= 0 or score.size == 0:
        return score
    lo, hi = float(np.quantile(score, q)), float(score.max())
    return np.zeros_like(score) if hi - lo <= 0 else np.clip((score - lo) / (hi - lo), 0.0, 1.0)


def anomaly_scores(psnr_app: np.ndarray, psnr_mot: np.ndarray, lam: float) -> np.ndarray:
    """Per-video anomaly score in [0, 1], higher = more anomalous: 1 − minmax(λ-weighted PSNR)."""
    return 1.0 - min_max(fused_psnr(psnr_app, psnr_mot, lam))


def normal_change(clips, max_clips: int = 512) -> float:
    """Median :func:`frame_change` between the last past frame and the target of normal training clips (a
    :class:`~m2s2l_edge.data.ClipDataset`, at the model's resolution), over at most ``max_clips`` clips spread
    evenly: the reference of the score's motion term (``ScoreConfig.motion_weight``), stored by ``train``."""
    n = len(clips)
    if n == 0:
        raise ValueError("no training clips to take the normal frame change from")
    picks = np.unique(np.linspace(0, n - 1, min(n, max_clips)).round().astype(np.int64))
    changes = []
    for i in picks:
        previous, target = (torch.from_numpy(f)[None] for f in clips.target_pair(int(i)))  # (1, 3, H, W) each
        changes.append(float(frame_change(target, previous)))
    return float(np.median(changes))


def stored_number(value) -> float | None:
    """A number a checkpoint or a model's metadata stored (λ, the normal frame change) as a float; None where it
    holds none or something that is not a number (its range is the reader's to check)."""
    return float(value) if isinstance(value, (int, float)) else None


def video_scores(terms: dict[str, np.ndarray], cfg, normal_change: float | None = None) -> np.ndarray:
    """Per-video anomaly score in [0, 1] (higher = more anomalous) from the per-frame terms of one video.

    ``terms``: ``psnr_app``, ``psnr_mot`` (frame PSNRs), ``patch_app``, ``patch_mot`` (worst-patch PSNRs) and
    ``change`` (:func:`frame_change` of each predicted frame against the one before), each (N - T,);
    ``cfg``: a :class:`m2s2l_edge.config.ScoreConfig`. Order: fuse with λ, set stalled frames aside, smooth the
    rest over time (Gaussian, ``cfg.smooth_sigma`` frames), min-max normalise it, floor it at its
    ``cfg.floor_quantile`` (:func:`quantile_floor`), stalled frames score 1; with ``cfg.motion_weight`` w > 0 the
    result is (1 − w)·that + w·min-max(|change − ``normal_change``|), min-max normalised (``normal_change`` None:
    the video's own median change).
    """
    app, mot = (terms["psnr_app"], terms["psnr_mot"]) if cfg.method == "paper" else (terms["patch_app"],
                                                                                     terms["patch_mot"])
    if len(app) == 0:
        return np.zeros(0)
    fused = fused_psnr(app, mot, cfg.lam)
    still = stalled(terms["change"], cfg.stall_ratio) if cfg.stall_ratio > 0 else np.zeros(len(fused), dtype=bool)
    out = np.ones(len(fused), dtype=np.float64)
    live = fused[~still]
    if live.size:
        if cfg.smooth_sigma > 0:
            from scipy.ndimage import gaussian_filter1d

            live = gaussian_filter1d(live, cfg.smooth_sigma, mode="nearest")
        out[~still] = quantile_floor(1.0 - min_max(live), cfg.floor_quantile)
    if cfg.motion_weight > 0:
        change = np.asarray(terms["change"], dtype=np.float64)
        ref = float(np.median(change)) if normal_change is None else float(normal_change)
        out = min_max((1 - cfg.motion_weight) * out + cfg.motion_weight * min_max(np.abs(change - ref)))
    return out


def _check_lambda(lam: float, what: str) -> float:
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"{what} must lie in [0, 1], got {lam}")
    return float(lam)


def resolve_lambda(dataset: str | None, lam: float | None = None, stored: float | None = None) -> tuple[float, str]:
    """The score weight λ and where it came from, the one rule every command and backend follows:

    1. ``lam``, given explicitly (``--lambda``): "explicit";
    2. ``stored``, the λ the model carries (an exported model's or engine's metadata, a checkpoint that stored one):
       "stored in the model";
    3. the paper's value for ``dataset`` (Ped2 0.6, Avenue 0.4, ShanghaiTech 0.5; any letter case): "paper (ped2)";
    4. our default 0.5 for any other data set or none.

    Raises ValueError for a λ outside [0, 1].
    """
    if lam is not None:
        return _check_lambda(lam, "lambda"), "explicit"
    if stored is not None:
        return _check_lambda(stored, "the model's stored lambda"), STORED
    key = dataset.lower() if dataset else None
    if key in PAPER_LAMBDA:
        return PAPER_LAMBDA[key], f"paper ({key})"
    return DEFAULT_LAMBDA, "default (our choice: data set not in the paper)" if dataset else "default (no data set)"


def model_lambda(metadata: dict) -> float | None:
    """The λ a backend's model carries (for ``resolve_lambda(..., stored=...)``), or None.

    An exported model (ONNX, engine) stores the λ fixed at export time in its metadata. The PyTorch backend's
    metadata holds a λ derived on the spot unless its checkpoint stored one (``lambda_source`` says which); only a
    stored one counts, so that the data set being evaluated picks the paper's value otherwise.
    """
    lam = metadata.get("lambda")
    if lam is None or (metadata.get("scan") == "torch" and metadata.get("lambda_source") != STORED):
        return None
    return float(lam)
