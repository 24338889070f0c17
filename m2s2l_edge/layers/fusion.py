"""Scale fusion and feature decomposition."""

from __future__ import annotations

import torch
from torch import nn


class ScaleAttention(nn.Module):
    """Softmax weights over S scales, then their weighted sum.

    ``per_position=False``: one weight per scale and sample, from globally pooled features (the spatial stream's
    adaptive importance weighting). ``per_position=True``: one weight per scale, sample and position (the temporal
    stream's attention over scales). Shapes: features (B, S, C, h, w) → (B, C, h, w); weights (B, S, 1|h, 1|w).
    """

    def __init__(self, dim: int, per_position: bool) -> None:
        super().__init__()
        self.per_position = per_position
        self.score = nn.Conv2d(dim, 1, 1) if per_position else nn.Linear(dim, 1)

    def weights(self, feats: torch.Tensor) -> torch.Tensor:
        b, s, c, h, w = feats.shape
        if self.per_position:
            logits = self.score(feats.reshape(b * s, c, h, w)).view(b, s, 1, h, w)  # (B, S, 1, h, w)
        else:
            logits = self.score(feats.mean(dim=(3, 4))).view(b, s, 1, 1, 1)  # (B, S, 1, 1, 1)
        return torch.softmax(logits, dim=1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return (self.weights(feats) * feats).sum(dim=1)


class FeatureDecomposition(nn.Module):
    """Split fused features F into common, appearance-specific and motion-specific parts by learnable gates.

    common = σ(W_c F) ⊙ F; R = F − common; appearance = σ(W_a R) ⊙ R; motion = σ(W_m R) ⊙ R.
    Shapes: (B, C, h, w) in, three (B, C, h, w) out.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate_common = nn.Conv2d(dim, dim, 1)
        self.gate_appearance = nn.Conv2d(dim, dim, 1)
        self.gate_motion = nn.Conv2d(dim, dim, 1)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        common = torch.sigmoid(self.gate_common(f)) * f
        residual = f - common
        appearance = torch.sigmoid(self.gate_appearance(residual)) * residual
        motion = torch.sigmoid(self.gate_motion(residual)) * residual
        return common, appearance, motion
