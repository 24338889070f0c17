"""Per-frame terms a score is made of: PSNR of a prediction, PSNR of its worst window, frame change.

All functions work on torch tensors of images in model units ([-1, 1] frames).
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
