"""The two decoders: fused features up to an image, joining the encoders' finer feature maps on the way."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, separable: bool = False) -> nn.Sequential:
    """3×3 convolution, BatchNorm, ReLU; ``separable``: the 3×3 depth-wise, then a 1×1 across channels (the
    BatchNorm follows the 1×1, so inference folds it the same way)."""
    if separable:
        return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                             nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Decoder(nn.Module):
    """Fused features (B, C_in, h, w) → image (B, 3, h·2^S, w·2^S) through S ×2 upsampling stages.

    ``channels[0]`` is the width at the fused resolution, ``channels[i]`` after the i-th upsampling;
    ``level_channels[i]`` is the width of the feature map joined after the i-th upsampling (coarsest first); 0 means
    nothing is joined at that level (its entry in ``levels`` is ignored).
    ``out_scale`` bounds the output by out_scale·tanh (1 for frames in [-1, 1], 2 for frame differences).
    ``separable``: every 3×3 block convolution depth-wise separable (:func:`conv_bn_relu`); the output head stays
    dense.
    """

    def __init__(self, in_ch: int, channels: tuple[int, ...], level_channels: tuple[int, ...], out_scale: float,
                 separable: bool = False):
        super().__init__()
        self.out_scale = out_scale
        self.level_channels = tuple(level_channels)
        # 1×1 first: the stacked memory read-outs are wide (up to 4C) and a 3×3 there would hold most parameters.
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, channels[0], 1, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True),
            conv_bn_relu(channels[0], channels[0], separable),
        )
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for cin, cout, clevel in zip(channels[:-1], channels[1:], level_channels, strict=True):
            self.ups.append(
                nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
                              nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
            )
            self.blocks.append(nn.Sequential(conv_bn_relu(cout + clevel, cout, separable),
                                             conv_bn_relu(cout, cout, separable)))
        self.head = nn.Conv2d(channels[-1], 3, 3, padding=1)

    def forward(self, x: torch.Tensor, levels: list[torch.Tensor]) -> torch.Tensor:
        x = self.stem(x)
        for up, block, level, clevel in zip(self.ups, self.blocks, levels, self.level_channels, strict=True):
            x = block(torch.cat([up(x), level], dim=1) if clevel else up(x))
        return self.out_scale * torch.tanh(self.head(x))
