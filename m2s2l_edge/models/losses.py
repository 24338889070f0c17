"""Training losses as pure functions: L = L_frame + λ_m·L_motion + λ_s·L_sep (+ MNAD memory terms).

L_frame's intensity term may weigh the pixels that move more than the static background (LossConfig.
foreground_weight, our addition; docs/DESIGN.md §3.1).

Shapes: frames and motion maps (B, 3, H, W) in model units (frames in [-1, 1], differences in [-2, 2]);
decomposed features (B, C, h, w).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from m2s2l_edge.config import LossConfig


def intensity_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error (FFP's intensity term); with ``weight`` (B, 1, H, W), the weighted mean over pixels."""
    if weight is None:
        return F.mse_loss(pred, target)
    return (weight * (pred - target).pow(2)).sum() / (weight.sum() * pred.shape[1])


def foreground_weights(target: torch.Tensor, last: torch.Tensor, weight: float, threshold: float) -> torch.Tensor:
    """Per-pixel weights (B, 1, H, W) of the intensity term: 1 + ``weight`` where the scene moves, else 1.

    A pixel moves when its mean absolute change over colour from the last input frame to the target exceeds
    ``threshold`` (model units), or a neighbour's does (3x3): the moving people and their outlines. On the vtest
    training frames at 64 px that is 6.7 % of the pixels; half the pixels do not change at all.
    """
    change = (target - last).abs().mean(dim=1, keepdim=True)
    moving = F.max_pool2d(change, kernel_size=3, stride=1, padding=1) > threshold
    return 1.0 + weight * moving.to(target.dtype)


def gradient_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """FFP's gradient-difference loss: L1 between absolute image gradients along x and y."""

    def grads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x[..., :, 1:] - x[..., :, :-1]).abs(), (x[..., 1:, :] - x[..., :-1, :]).abs()

    px, py = grads(pred)
    tx, ty = grads(target)
    return (px - tx).abs().mean() + (py - ty).abs().mean()


def frame_loss(pred: torch.Tensor, target: torch.Tensor, gradient_weight: float = 1.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """L_frame = intensity + gradient_weight · gradient (paper Eq. 7); ``weight`` weighs the intensity term's
    pixels (foreground_weights), the gradient term stays a plain mean."""
    return intensity_loss(pred, target, weight) + gradient_weight * gradient_loss(pred, target)


def motion_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_motion: L1 between predicted and true frame difference (paper Eq. 8; L1 is our choice)."""
    return F.l1_loss(pred, target)


def separation_loss(common: torch.Tensor, appearance: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """L_sep (paper Eq. 9; the exact form was lost, ours): mean squared cosine similarity between each pair of
    parts, per position, so the common, appearance-specific and motion-specific features carry different
    information."""

    def cos2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(a, b, dim=1, eps=1e-6).pow(2).mean()

    return (cos2(common, appearance) + cos2(common, motion) + cos2(appearance, motion)) / 3


def motion_target(clip: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """What the motion decoder predicts: the next frame minus the last input frame. clip (B, T, 3, H, W)."""
    return target - clip[:, -1]


def total_loss(
    outputs: dict[str, torch.Tensor], clip: torch.Tensor, target: torch.Tensor, cfg: LossConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of every active term, and each term's value for logging."""
    weight = (foreground_weights(target, clip[:, -1], cfg.foreground_weight, cfg.foreground_threshold)
              if cfg.foreground_weight > 0 else None)
    terms: dict[str, torch.Tensor] = {
        "frame": frame_loss(outputs["frame_pred"], target, cfg.gradient_weight, weight)}
    loss = terms["frame"]
    if cfg.lambda_motion > 0:
        terms["motion"] = motion_loss(outputs["motion_pred"], motion_target(clip, target))
        loss = loss + cfg.lambda_motion * terms["motion"]
    if cfg.lambda_sep > 0 and "common" in outputs:
        terms["sep"] = separation_loss(outputs["common"], outputs["appearance"], outputs["motion"])
        loss = loss + cfg.lambda_sep * terms["sep"]
    compact = [v for k, v in outputs.items() if k.startswith("memory_compactness")]
    separate = [v for k, v in outputs.items() if k.startswith("memory_separateness")]
    if compact:
        terms["compact"] = torch.stack(compact).mean()
        loss = loss + cfg.compactness_weight * terms["compact"]
    if separate:
        terms["separate"] = torch.stack(separate).mean()
        loss = loss + cfg.separateness_weight * terms["separate"]
    return loss, {k: float(v.detach()) for k, v in terms.items()}
