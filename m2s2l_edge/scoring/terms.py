"""Per-frame terms a score is made of, from a model's predictions: the one place that turns predictions into PSNRs.

:func:`clip_terms` takes one batch of clips, their targets and a backend's two predictions and returns every term
(:data:`TERMS`) plus the per-pixel error map; ``eval``, ``watch``, ``calibrate``, the export parity check and the
benchmarks all call it, whichever backend (PyTorch, ONNX Runtime, TensorRT, Triton) produced the predictions.

Images are in model units ([-1, 1] frames); PSNRs are on [0, 1] images with MAX = 1 (docs/DESIGN.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The per-frame terms, in the column order of every per-frame table (eval's scores/<video>.csv, watch --scores):
# PSNR of the predicted frame / motion (the published terms), the same on the worst window, and the frame change.
TERMS = ("psnr_app", "psnr_mot", "patch_app", "patch_mot", "change")
EPS = 1e-10  # keeps a perfect prediction finite (100 dB)
# Columns of a per-frame table (eval's scores/<video>.csv; watch --scores adds camera, stream time, the unsmoothed
# score, the threshold and whether an event is open): the frame, its terms, the fused PSNR its score is made of,
# the score.
FRAME_COLUMNS = ("frame", *TERMS, "fused_psnr", "score")


def psnr_of_mse(mse, eps: float = EPS):
    """10·log10(1 / MSE), MSE on the [0, 1] scale: the PSNR formula, for numpy arrays, floats and torch tensors."""
    if isinstance(mse, (float, int, np.ndarray, np.floating)):
        return 10 * np.log10(1.0 / (np.asarray(mse, dtype=np.float64) + eps))
    import torch

    return 10 * torch.log10(1.0 / (mse + eps))


def error_map(pred, target):
    """Squared error on the [0, 1] scale averaged over colour: (B, C, H, W) tensors → (B, H, W) float32.

    Differences of [-1, 1] images are halved to reach the [0, 1] scale; a difference of two such images (the motion
    stream) is halved the same way, so MAX stays 1 for the motion PSNR too (our choice, docs/DESIGN.md §3).
    """
    return ((pred.float() - target.float()) / 2).pow(2).mean(dim=1)


def worst_window(err, patch: int):
    """Mean of the worst ``patch``×``patch`` window (stride patch/2) of error maps (B, H, W) → (B,). A window as
    large as the map gives the map's mean."""
    import torch.nn.functional as F

    patch = max(1, min(patch, err.shape[-2], err.shape[-1]))
    return F.avg_pool2d(err[:, None], patch, stride=max(1, patch // 2)).flatten(1).amax(dim=1)


def psnr(pred, target):
    """Per-sample PSNR of a prediction, (B, C, H, W) tensors → (B,)."""
    return psnr_of_mse(error_map(pred, target).flatten(1).mean(dim=1))


def patch_psnr(pred, target, patch: int):
    """Per-sample PSNR of the worst ``patch``×``patch`` window (stride patch/2): (B, C, H, W) → (B,). A patch as large
    as the image gives :func:`psnr`."""
    return psnr_of_mse(worst_window(error_map(pred, target), patch))


def frame_change(frame, previous):
    """Mean absolute change between consecutive frames, (B, C, H, W) pairs → (B,), in [-1, 1] units."""
    return (frame.float() - previous.float()).abs().flatten(1).mean(dim=1)


@dataclass(frozen=True)
class BatchTerms:
    """The terms of one batch: ``terms[name]`` (B,) float64 for each of :data:`TERMS`; ``error_map`` (B, H, W) float32,
    the frame prediction's squared error (what an ROI's PSNR is read from, :func:`region_psnr`)."""

    terms: dict[str, np.ndarray]
    error_map: np.ndarray

    def __len__(self) -> int:
        return len(self.error_map)


def clip_terms(clips, targets, frame_pred, motion_pred, patch: int) -> BatchTerms:
    """Every per-frame term of one batch, from a backend's output.

    Shapes: clips (B, T, 3, H, W), targets (B, 3, H, W), frame_pred and motion_pred (B, 3, H, W); numpy arrays or
    torch tensors, [-1, 1] frames. The motion stream is compared with target − last input frame
    (:func:`m2s2l_edge.models.losses.motion_target`); ``patch`` is the worst window's side in pixels.
    Raises ValueError when the predictions do not have the targets' shape.
    """
    import torch

    from m2s2l_edge.models.losses import motion_target

    clip, target = torch.as_tensor(np.asarray(clips)), torch.as_tensor(np.asarray(targets))
    frame = torch.as_tensor(np.asarray(frame_pred), dtype=torch.float32)  # (B, 3, H, W)
    motion = torch.as_tensor(np.asarray(motion_pred), dtype=torch.float32)  # (B, 3, H, W)
    if frame.shape != target.shape or motion.shape != target.shape:
        raise ValueError(f"the backend returned frame_pred {tuple(frame.shape)} / motion_pred {tuple(motion.shape)}, "
                         f"expected {tuple(target.shape)}")
    err_app = error_map(frame, target)  # (B, H, W)
    err_mot = error_map(motion, motion_target(clip, target))  # (B, H, W)
    values = {
        "psnr_app": psnr_of_mse(err_app.flatten(1).mean(dim=1)),
        "psnr_mot": psnr_of_mse(err_mot.flatten(1).mean(dim=1)),
        "patch_app": psnr_of_mse(worst_window(err_app, patch)),
        "patch_mot": psnr_of_mse(worst_window(err_mot, patch)),
        "change": frame_change(target, clip[:, -1]),
    }
    return BatchTerms({k: v.numpy().astype(np.float64) for k, v in values.items()}, err_app.numpy())


def region_psnr(error_map: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) of the frame prediction inside ``mask`` (h, w) bool, from its error map (h, w): with a mask covering
    the whole map this is the frame's ``psnr_app``."""
    return float(psnr_of_mse(float(np.mean(error_map[mask], dtype=np.float64))))


def _window_sums(x: np.ndarray, patch: int) -> np.ndarray:
    """Sums of every ``patch``×``patch`` window of (h, w) at stride patch/2 (the windows of :func:`worst_window`)."""
    stride = max(1, patch // 2)
    c = np.pad(np.asarray(x, dtype=np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys = np.arange(0, x.shape[0] - patch + 1, stride)
    xs = np.arange(0, x.shape[1] - patch + 1, stride)
    return c[np.ix_(ys + patch, xs + patch)] - c[np.ix_(ys, xs + patch)] - c[np.ix_(ys + patch, xs)] + c[np.ix_(ys, xs)]


def region_terms(terms: dict[str, float], error_map: np.ndarray, mask: np.ndarray, patch: int) -> dict[str, float]:
    """One frame's terms with the frame stream's read inside a region: ``psnr_app`` over ``mask`` (h, w) bool, and
    ``patch_app`` over the worst window at least half inside it (any window touching it, for a region smaller than
    that); the motion stream's PSNRs and the frame change stay the whole frame's."""
    patch = max(1, min(patch, *error_map.shape))
    inside = _window_sums(mask, patch)
    mse = _window_sums(np.where(mask, error_map, 0.0), patch) / np.maximum(inside, 1.0)
    keep = inside >= patch * patch / 2 if np.any(inside >= patch * patch / 2) else inside > 0
    worst = float(mse[keep].max()) if np.any(keep) else float(np.mean(error_map[mask], dtype=np.float64))
    return {**terms, "psnr_app": region_psnr(error_map, mask), "patch_app": float(psnr_of_mse(worst))}


def normal_change(clips, max_clips: int = 512) -> float:
    """Median :func:`frame_change` between the last past frame and the target of normal training clips (a
    :class:`~m2s2l_edge.data.ClipDataset`, at the model's resolution), over at most ``max_clips`` clips spread
    evenly: the reference of the score's motion term (``ScoreConfig.motion_weight``), stored by ``train``."""
    import torch

    n = len(clips)
    if n == 0:
        raise ValueError("no training clips to take the normal frame change from")
    picks = np.unique(np.linspace(0, n - 1, min(n, max_clips)).round().astype(np.int64))
    changes = []
    for i in picks:
        previous, target = (torch.from_numpy(f)[None] for f in clips.target_pair(int(i)))  # (1, 3, H, W) each
        changes.append(float(frame_change(target, previous)))
    return float(np.median(changes))
