"""Convolutional pieces: the appearance skip pyramid and the two decoders."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SkipPyramid(nn.Module):
    """Shallow CNN on the stacked clip giving decoder skips at 1/s, 1/(2s), … of the input resolution (s =
    ``first_stride``, 1 for the U-Net-style pyramid that starts at full resolution).

    Shapes: clip (B, T·3, H, W) → [(B, c_0, H/s, W/s), (B, c_1, H/2s, W/2s), …] (finest first).
    """

    def __init__(self, in_ch: int, channels: tuple[int, ...], first_stride: int = 1) -> None:
        super().__init__()
        layers = []
        prev = in_ch
        for i, c in enumerate(channels):
            stride = 1 if i == 0 else 2
            # A pyramid that starts below full resolution (``first_stride`` > 1) averages down first: a strided 3×3
            # conv would sample every 4th pixel at stride 4.
            pool = [nn.AvgPool2d(first_stride)] if i == 0 and first_stride > 1 else []
            layers.append(
                nn.Sequential(*pool, nn.Conv2d(prev, c, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c),
                              nn.ReLU(inplace=True))
            )
            prev = c
        self.stages = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class Decoder(nn.Module):
    """Fused features (B, C_in, h, w) → image (B, 3, h·2^S, w·2^S) through S ×2 upsampling stages with skips.

    ``channels[0]`` is the width at the fused resolution, ``channels[i]`` after the i-th upsampling;
    ``skip_channels[i]`` is the width of the skip joined after the i-th upsampling (coarsest first); 0 means no skip
    at that level (its entry in ``skips`` is ignored).
    ``out_scale`` bounds the output by out_scale·tanh (1 for frames in [-1, 1], 2 for frame differences).
    """

    def __init__(self, in_ch: int, channels: tuple[int, ...], skip_channels: tuple[int, ...], out_scale: float):
        super().__init__()
        self.out_scale = out_scale
        self.skip_channels = tuple(skip_channels)
        # 1×1 first: the stacked memory read-outs are wide (up to 4C) and a 3×3 there would hold most parameters.
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, channels[0], 1, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True),
            conv_bn_relu(channels[0], channels[0]),
        )
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for cin, cout, cskip in zip(channels[:-1], channels[1:], skip_channels, strict=True):
            self.ups.append(
                nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
                              nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
            )
            self.blocks.append(nn.Sequential(conv_bn_relu(cout + cskip, cout), conv_bn_relu(cout, cout)))
        self.head = nn.Conv2d(channels[-1], 3, 3, padding=1)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.stem(x)
        for up, block, skip, cskip in zip(self.ups, self.blocks, skips, self.skip_channels, strict=True):
            x = block(torch.cat([up(x), skip], dim=1) if cskip else up(x))
        return self.out_scale * torch.tanh(self.head(x))
