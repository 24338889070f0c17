"""A peer frame predictor (MNAD or FFP's generator) behind M²S²L's interface, so ``train`` and ``eval`` can run a
real peer on the same footage: ``forward(clip)`` returns the training outputs, ``predict(clip)`` the inference pair
``(frame_pred, motion_pred)`` and ``loss(...)`` the peer's own objective.

Objectives (from the peers' public code; only the terms that train the predictor itself):
- MNAD: intensity MSE + 0.1 · feature compactness + 0.1 · feature separateness (its defaults).
- FFP: intensity MSE + gradient difference (λ_int = λ_gd = 1); the adversarial and optical-flow terms need the
  discriminator and FlowNet-SD and are not trained here.
The motion prediction is frame_pred − last frame (neither peer has a motion decoder), so M²S²L's fused score
reduces to the frame PSNR at λ = 1 and mixes in the same frame error otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

from m2s2l_edge.config import LossConfig, ModelConfig

ARCHITECTURES = ("mnad", "ffp")


class PeerPredictor(nn.Module):
    """Shapes: clip (B, T, 3, H, W) in [-1, 1] → frame_pred, motion_pred (B, 3, H, W). ``cfg`` supplies T and H."""

    def __init__(self, arch: str, cfg: ModelConfig) -> None:
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown peer predictor {arch!r}; valid: {', '.join(ARCHITECTURES)}")
        self.arch, self.cfg = arch, cfg
        size = dict(clip_len=cfg.clip_len, channels=cfg.in_channels, image_size=cfg.image_size)
        if arch == "mnad":
            from m2s2l_edge.models.baselines.mnad import MNAD

            self.net: nn.Module = MNAD(memory_items=cfg.memory_items, **size)
        else:
            from m2s2l_edge.models.baselines.ffp import FFPGenerator

            self.net = FFPGenerator(**size)

    def forward(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        b, t, c, h, w = clip.shape
        frame = self.net(clip.reshape(b, t * c, h, w))  # (B, 3, H, W)
        out = {"frame_pred": frame, "motion_pred": frame - clip[:, -1]}
        for k, v in getattr(self.net, "memory_losses", {}).items():
            out[f"memory_{k}"] = v
        return out

    def predict(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.forward(clip)
        return out["frame_pred"], out["motion_pred"]

    def loss(self, outputs: dict[str, torch.Tensor], clip: torch.Tensor, target: torch.Tensor,
             cfg: LossConfig | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The peer's objective (module docstring); ``cfg`` (M²S²L's loss set) does not apply and is ignored."""
        from m2s2l_edge.models.losses import gradient_loss, intensity_loss

        terms = {"frame": intensity_loss(outputs["frame_pred"], target)}
        if self.arch == "mnad":
            terms["compact"] = outputs.get("memory_compactness", torch.zeros((), device=target.device))
            terms["separate"] = outputs.get("memory_separateness", torch.zeros((), device=target.device))
            loss = terms["frame"] + 0.1 * terms["compact"] + 0.1 * terms["separate"]
        else:
            terms["gradient"] = gradient_loss(outputs["frame_pred"], target)
            loss = terms["frame"] + terms["gradient"]
        return loss, {k: float(v.detach()) for k, v in terms.items()}
