"""Anomaly scoring: PSNR of both streams, the λ-weighted score, per-video min-max normalisation (docs/DESIGN.md §6).

All functions are pure and work on numpy arrays or torch tensors of images in model units ([-1, 1] frames).
"""

from __future__ import annotations

import numpy as np
import torch


def psnr(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Per-sample PSNR = 10·log10(1 / MSE) on images mapped from [-1, 1] to [0, 1]. (B, ...) → (B,).

    Used for frames and, with the same MAX, for frame differences (a difference of [-1, 1] frames is mapped by the
    same factor 1/2, so MAX stays 1 on the [0, 1] scale: our choice for the motion PSNR).
    """
    mse = ((pred.float() - target.float()) / 2).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1.0 / (mse + eps))


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


def anomaly_scores(psnr_app: np.ndarray, psnr_mot: np.ndarray, lam: float) -> np.ndarray:
    """Per-video anomaly score in [0, 1], higher = more anomalous: 1 − minmax(λ-weighted PSNR)."""
    return 1.0 - min_max(fused_psnr(psnr_app, psnr_mot, lam))
