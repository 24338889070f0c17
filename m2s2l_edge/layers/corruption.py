"""Training-time input corruption: foreign content pasted into the input clip while the target stays clean.

A future-frame predictor that may copy its input predicts an anomaly as well as anything else once the anomaly is in
the input frames (a recoloured pedestrian is copied, colour and all). Trained on clips whose input carries a box of
foreign content that the target frame does not, copying that box costs loss, so the model learns to predict what
normally belongs there from its memory and the context instead. This is the patch-based pseudo anomaly of Astrid
et al. ("Learning Not to Reconstruct Anomalies", BMVC 2021), whose autoencoder reconstructs the normal frame from an
input with a pasted patch; the pasted content here comes from another clip of the batch (no outside data set), with
its colour channels permuted so that it is not simply normal footage in another place (our choice).
"""

from __future__ import annotations

import torch
from torch import nn

CORRUPTION_KINDS = ("paste", "mask")

# Non-identity permutations of RGB: pasted content never keeps its own colours.
_PERMUTATIONS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


class InputCorruption(nn.Module):
    """With probability ``prob`` per clip, one box (sides ``min_side`` to 1/4 of the image side) of every input frame is
    replaced, the same box in every frame: by the content of another clip of the batch at another place, colour
    channels permuted (``paste``), or by zeros, mid-grey in [-1, 1] (``mask``). Identity outside training.

    Shapes: clip (B, T, C, H, W) → (B, T, C, H, W). Uses the global torch RNG (restored on resume).
    """

    def __init__(self, prob: float, kind: str = "paste", min_side: float = 0.125) -> None:
        super().__init__()
        if kind not in CORRUPTION_KINDS:
            raise ValueError(f"unknown corruption kind {kind!r}; valid: {', '.join(CORRUPTION_KINDS)}")
        self.prob, self.kind, self.min_side = prob, kind, min_side

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob <= 0:
            return clip
        b, _, c, h, w = clip.shape
        hit = torch.rand(b) < self.prob
        if not bool(hit.any()):
            return clip
        out = clip.clone()
        lo_h, hi_h = max(1, round(h * self.min_side)), max(1, h // 4)
        lo_w, hi_w = max(1, round(w * self.min_side)), max(1, w // 4)
        for i in torch.nonzero(hit).flatten().tolist():
            bh = int(torch.randint(lo_h, hi_h + 1, ()))
            bw = int(torch.randint(lo_w, hi_w + 1, ()))
            y, x = int(torch.randint(0, h - bh + 1, ())), int(torch.randint(0, w - bw + 1, ()))
            if self.kind == "mask":
                out[i, :, :, y:y + bh, x:x + bw] = 0
                continue
            j = int(torch.randint(0, b, ()))
            sy, sx = int(torch.randint(0, h - bh + 1, ())), int(torch.randint(0, w - bw + 1, ()))
            perm = list(_PERMUTATIONS[int(torch.randint(0, len(_PERMUTATIONS), ()))]) if c == 3 else list(range(c))
            out[i, :, :, y:y + bh, x:x + bw] = clip[j, :, perm, sy:sy + bh, sx:sx + bw]
        return out
