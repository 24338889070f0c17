"""MNAD, prediction variant (Park et al., CVPR 2020; cvlab-yonsei/MNAD).

Facts carried over from the public code: a U-Net-like encoder on T = 4 stacked RGB frames (12 channels) at 256×256,
widths 64 / 128 / 256 / 512 with two 3×3 conv + BatchNorm + ReLU per stage and 2×2 max pooling (the last stage
ends with a bare conv, then BatchNorm + ReLU are not applied); a memory of 10 items × 512 read by attention
(query and read-out concatenated: 1024 channels); a decoder with 3×3 transposed convolutions (stride 2) and skip
concatenations, ending in 64 → 64 → 3 convs and tanh. Memory items are state, not parameters (updated by rule).
"""

from __future__ import annotations

import torch
from torch import nn

from m2s2l_edge.layers.memory import MemoryBank


def _double_conv(cin: int, cout: int, last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
    ]
    if last_activation:
        layers += [nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers)


def _upsample(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(cout), nn.ReLU()
    )


class MNAD(nn.Module):
    """Shapes: frames (B, T·C, H, W) in [-1, 1], T = clip_len past frames stacked on channels → next frame (B, C, H, W).

    ``predict(clip)`` takes M²S²L's clip layout (B, T, C, H, W) and returns ``(frame_pred, motion_pred)`` with the
    motion prediction taken as frame_pred − last frame (MNAD has no motion decoder), so it can stand in for M²S²L.
    """

    def __init__(self, clip_len: int = 4, channels: int = 3, image_size: int = 256, memory_items: int = 10,
                 feature_dim: int = 512) -> None:
        super().__init__()
        self.clip_len, self.channels, self.image_size = clip_len, channels, image_size
        cin = clip_len * channels
        self.enc1 = _double_conv(cin, 64)
        self.enc2 = _double_conv(64, 128)
        self.enc3 = _double_conv(128, 256)
        self.enc4 = _double_conv(256, feature_dim, last_activation=False)
        self.pool = nn.MaxPool2d(2)
        self.memory = MemoryBank(memory_items, feature_dim)
        self.dec4 = _double_conv(2 * feature_dim, 512)
        self.up4 = _upsample(512, 256)
        self.dec3 = _double_conv(512, 256)
        self.up3 = _upsample(256, 128)
        self.dec2 = _double_conv(256, 128)
        self.up2 = _upsample(128, 64)
        self.head = nn.Sequential(
            nn.Conv2d(128, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, channels, 3, padding=1), nn.Tanh(),
        )
        self.memory_losses: dict[str, torch.Tensor] = {}

    def example_inputs(self, batch: int = 1, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        s = self.image_size
        return (torch.zeros(batch, self.clip_len * self.channels, s, s, device=device, dtype=dtype),)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        s1 = self.enc1(frames)  # (B, 64, H, W)
        s2 = self.enc2(self.pool(s1))  # (B, 128, H/2, W/2)
        s3 = self.enc3(self.pool(s2))  # (B, 256, H/4, W/4)
        f = self.enc4(self.pool(s3))  # (B, 512, H/8, W/8)
        read, self.memory_losses = self.memory(f)  # (B, 1024, H/8, W/8)
        x = self.up4(self.dec4(read))
        x = self.up3(self.dec3(torch.cat([s3, x], dim=1)))
        x = self.up2(self.dec2(torch.cat([s2, x], dim=1)))
        return self.head(torch.cat([s1, x], dim=1))  # (B, C, H, W)

    def predict(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, c, h, w = clip.shape
        frame = self.forward(clip.reshape(b, t * c, h, w))
        return frame, frame - clip[:, -1]
