"""MemAE, memory-augmented 3-D convolutional autoencoder (Gong et al., ICCV 2019; donggong1/memae-anomaly-detection).

Facts carried over from the public code: input clips of 16 grey frames at 256×256 (the UCSD_P2_256 setting);
encoder 3×3×3 conv3d 1 → 96 (stride 1,2,2) → 128 → 256 → 256 (stride 2,2,2), BatchNorm3d + LeakyReLU(0.2) each; a
memory of 2000 items × 256 read by softmax attention with hard shrinkage (λ = 0.0025) and L1 renormalisation; the
mirror decoder of 3×3×3 transposed conv3d (the last one stride 1,2,2 to 1 channel, no activation). Test clips slide
one frame at a time (the repo's index script: overlap = clip length − 1), so each scored frame costs one clip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MemoryUnit(nn.Module):
    """Attention read over learnt items with hard shrinkage. Shapes: z (B, C, T, H, W) → (B, C, T, H, W), att."""

    def __init__(self, items: int, dim: int, shrink: float = 0.0025) -> None:
        super().__init__()
        self.shrink = shrink
        self.weight = nn.Parameter(torch.empty(items, dim).uniform_(-1 / math.sqrt(dim), 1 / math.sqrt(dim)))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, t, h, w = z.shape
        q = z.permute(0, 2, 3, 4, 1).reshape(-1, c)  # (B·T·H·W, C)
        att = torch.softmax(q @ self.weight.t(), dim=1)  # (N, M)
        if self.shrink > 0:
            # Hard shrinkage written with ReLU so it stays differentiable (the paper's Eq. 7).
            att = F.relu(att - self.shrink) * att / ((att - self.shrink).abs() + 1e-12)
            att = F.normalize(att, p=1, dim=1)
        out = (att @ self.weight).view(b, t, h, w, c).permute(0, 4, 1, 2, 3)  # (B, C, T, H, W)
        return out, att


class MemAE(nn.Module):
    """Shapes: clip (B, 1, T, H, W) → reconstruction (B, 1, T, H, W); T = 16, H = W = 256."""

    def __init__(self, clip_len: int = 16, channels: int = 1, image_size: int = 256, memory_items: int = 2000,
                 shrink: float = 0.0025) -> None:
        super().__init__()
        self.clip_len, self.channels, self.image_size = clip_len, channels, image_size

        def down(cin: int, cout: int, stride: tuple[int, int, int]) -> list[nn.Module]:
            return [nn.Conv3d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm3d(cout), nn.LeakyReLU(0.2)]

        def up(cin: int, cout: int, stride: tuple[int, int, int], out_pad: tuple[int, int, int]) -> list[nn.Module]:
            return [nn.ConvTranspose3d(cin, cout, 3, stride=stride, padding=1, output_padding=out_pad),
                    nn.BatchNorm3d(cout), nn.LeakyReLU(0.2)]

        s2, s122 = (2, 2, 2), (1, 2, 2)
        self.encoder = nn.Sequential(
            *down(channels, 96, s122), *down(96, 128, s2), *down(128, 256, s2), *down(256, 256, s2)
        )
        self.memory = MemoryUnit(memory_items, 256, shrink)
        self.decoder = nn.Sequential(
            *up(256, 256, s2, (1, 1, 1)), *up(256, 128, s2, (1, 1, 1)), *up(128, 96, s2, (1, 1, 1)),
            nn.ConvTranspose3d(96, channels, 3, stride=s122, padding=1, output_padding=(0, 1, 1)),
        )

    def example_inputs(self, batch: int = 1, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        s = self.image_size
        return (torch.zeros(batch, self.channels, self.clip_len, s, s, device=device, dtype=dtype),)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        z, _ = self.memory(self.encoder(clip))  # (B, 256, T/8, H/16, W/16)
        return self.decoder(z)
