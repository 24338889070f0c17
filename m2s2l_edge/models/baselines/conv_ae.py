"""Conv-AE, the fully convolutional autoencoder of Hasan et al., "Learning temporal regularity in video sequences"
(CVPR 2016), from the paper (its Table 1; no official code).

Input: cuboids of 10 grey frames at 227×227 stacked on channels. Encoder: conv 512 of 11×11 stride 4 (→ 55×55),
2×2 max pool (→ 27), conv 256 of 5×5 (→ 27), pool (→ 13), conv 128 of 3×3; decoder: deconv 128 of 3×3, unpool (→ 27),
deconv 256 of 5×5, unpool (→ 55), deconv 512 of 11×11 stride 4 (→ 227), conv 10 of 5×5. Paddings keep those sizes
("same" for the stride-1 layers: our reading of the table); activations tanh. Our choice: unpooling is
nearest-neighbour upsampling to the pooled layer's size, since the pool switches of 512 / 256 maps cannot pair with
the decoder's 128 / 256 maps; it costs no multiply-adds either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvAE(nn.Module):
    """Shapes: cuboid (B, T, H, W) = (B, 10, 227, 227) grey frames → reconstruction of the same shape."""

    def __init__(self, clip_len: int = 10, image_size: int = 227) -> None:
        super().__init__()
        self.clip_len, self.channels, self.image_size = clip_len, 1, image_size
        self.conv1 = nn.Conv2d(clip_len, 512, 11, stride=4)
        self.conv2 = nn.Conv2d(512, 256, 5, padding=2)
        self.conv3 = nn.Conv2d(256, 128, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.deconv1 = nn.ConvTranspose2d(128, 128, 3, padding=1)
        self.deconv2 = nn.ConvTranspose2d(128, 256, 5, padding=2)
        self.deconv3 = nn.ConvTranspose2d(256, 512, 11, stride=4)
        self.conv4 = nn.Conv2d(512, clip_len, 5, padding=2)
        self.act = nn.Tanh()

    def example_inputs(self, batch: int = 1, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        s = self.image_size
        return (torch.zeros(batch, self.clip_len, s, s, device=device, dtype=dtype),)

    def forward(self, cuboid: torch.Tensor) -> torch.Tensor:
        x1 = self.act(self.conv1(cuboid))  # (B, 512, 55, 55)
        x2 = self.act(self.conv2(self.pool(x1)))  # (B, 256, 27, 27)
        x = self.act(self.conv3(self.pool(x2)))  # (B, 128, 13, 13)
        x = self.act(self.deconv1(x))
        x = F.interpolate(x, size=x2.shape[-2:], mode="nearest")  # (B, 128, 27, 27)
        x = self.act(self.deconv2(x))  # (B, 256, 27, 27)
        x = F.interpolate(x, size=x1.shape[-2:], mode="nearest")  # (B, 256, 55, 55)
        x = self.act(self.deconv3(x))  # (B, 512, 227, 227)
        return self.act(self.conv4(x))  # (B, 10, 227, 227)
