"""STD, spatio-temporal dissociation (Chang et al., Pattern Recognition 2022; ChangYunPeng/VideoAnomalyDetection).

Facts carried over from the public code: 5-frame RGB clips at 256×256; an appearance (static) autoencoder on the
first frame and a motion U-Net autoencoder on the first four frames (12 channels) that predicts the frame
difference to frame 5; residual basic blocks (two 3×3 convs, LeakyReLU; a strided 3×3 conv as shortcut) down, and
pixel-shuffle ×2 + 3×3 conv blocks up; widths 64·2^i from a 32-channel stem (``neck_planes`` 32), a
variance-attention 1×1 projection after each motion stage, BatchNorm before each appearance stage, a 3×3 projection
then L1 normalisation of both codes; a deep K-means head of ``cluster_num`` centres over the concatenated codes.
``config.py`` of the repo sets 3 stages of 1 block and 32 clusters; the constructor's defaults are 4 stages of 2
blocks and 128 clusters. Both are buildable here (``stages``, ``blocks``, ``clusters``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class _UpConv(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.PixelShuffle(2), _conv3(cin // 4, cout))


class BasicBlock(nn.Module):
    """Residual block; ``scale`` 2 halves the resolution, −2 doubles it (pixel shuffle), 1 keeps it."""

    def __init__(self, cin: int, cout: int, scale: int = 1) -> None:
        super().__init__()
        if scale == -2:
            self.conv1: nn.Module = _UpConv(cin, cout)
            self.shortcut: nn.Module | None = _UpConv(cin, cout)
        else:
            self.conv1 = _conv3(cin, cout, scale)
            self.shortcut = _conv3(cin, cout, scale) if scale != 1 or cin != cout else None
        self.conv2 = _conv3(cout, cout)
        self.act = nn.LeakyReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.act(self.conv1(x)))
        return self.act(out + (x if self.shortcut is None else self.shortcut(x)))


def _stage(cin: int, cout: int, blocks: int, scale: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, scale), *(BasicBlock(cout, cout) for _ in range(blocks - 1)))


class VarianceAttention(nn.Module):
    """x · exp(softmax over positions of the channel variance of a pooled 1×1 projection)."""

    def __init__(self, channels: int, pool: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.proj(x)
        if self.pool > 1:
            p = F.avg_pool2d(p, self.pool)
        var = (p - p.mean(dim=1, keepdim=True)).pow(2).sum(dim=1, keepdim=True)  # (B, 1, h, w)
        att = torch.softmax(var.flatten(2), dim=-1).view_as(var)
        if self.pool > 1:
            att = F.interpolate(att, scale_factor=self.pool, mode="nearest")
        return torch.exp(att) * x


class STD(nn.Module):
    """Shapes: clip (B, 5·C, H, W) (frames stacked on channels) → appearance reconstruction (B, C, H, W), predicted
    motion (B, C, H, W) and per-position cluster distances (B, h, w, K) at the code resolution H/2^stages."""

    def __init__(self, stages: int = 3, blocks: int = 1, clusters: int = 32, clip_len: int = 5, channels: int = 3,
                 image_size: int = 256, neck: int = 32) -> None:
        super().__init__()
        self.clip_len, self.channels, self.image_size = clip_len, channels, image_size
        widths = [2 * neck * 2**i for i in range(stages)]
        # Appearance (static) branch: stem, [BatchNorm, stage] per level, 3×3 projection.
        self.static_stem = nn.Sequential(_conv3(channels, neck), nn.ReLU())
        levels, cin = [], neck
        for w in widths:
            levels += [nn.BatchNorm2d(cin), _stage(cin, w, blocks, 2)]
            cin = w
        self.static_encoder = nn.Sequential(*levels)
        self.static_proj = nn.Sequential(_conv3(cin, cin), nn.ReLU())
        self.static_decoder = nn.Sequential(
            *(_stage(a, b, blocks, -2) for a, b in zip([cin, *widths[::-1][:-1]], widths[::-1], strict=True)),
            _conv3(widths[0], channels),
        )
        # Motion branch: U-Net of the same widths with variance attention, the last stage projected.
        self.motion_stem = nn.Sequential(_conv3(channels * (clip_len - 1), neck), nn.ReLU())
        self.motion_levels = nn.ModuleList()
        cin = neck
        for i, w in enumerate(widths):
            parts: list[nn.Module] = [_stage(cin, w, blocks, 2), VarianceAttention(w, 2 ** (stages - i))]
            if i == stages - 1:
                parts.append(_conv3(w, w))
            self.motion_levels.append(nn.Sequential(*parts))
            cin = w
        # Decoder: the deepest code up to widths[-2]; then concatenated with each shallower level on the way up.
        up_out = [*widths[::-1][1:], widths[0]]
        self.motion_ups = nn.ModuleList()
        cin = widths[-1]
        for i, w in enumerate(up_out):
            self.motion_ups.append(_stage(cin if i == 0 else 2 * cin, w, blocks, -2))
            cin = w
        self.motion_head = _conv3(widths[0], channels)
        code = widths[-1]
        self.cluster_centers = nn.Parameter(torch.rand(clusters, 2 * code))

    def example_inputs(self, batch: int = 1, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        s = self.image_size
        return (torch.zeros(batch, self.clip_len * self.channels, s, s, device=device, dtype=dtype),)

    def forward(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.channels
        static_in, motion_in = clip[:, :c], clip[:, : (self.clip_len - 1) * c]
        zs = F.normalize(self.static_proj(self.static_encoder(self.static_stem(static_in))), p=1, dim=1)
        appearance = self.static_decoder(zs)
        x = self.motion_stem(motion_in)
        levels = []
        for level in self.motion_levels:
            x = level(x)
            levels.append(x)
        levels[-1] = F.normalize(levels[-1], p=1, dim=1)
        zm = levels[-1]
        x = self.motion_ups[0](zm)
        for up, skip in zip(self.motion_ups[1:], reversed(levels[:-1]), strict=True):
            x = up(torch.cat([x, skip], dim=1))
        motion = self.motion_head(x)
        code = F.normalize(torch.cat([zs, zm], dim=1), p=2, dim=1).permute(0, 2, 3, 1)  # (B, h, w, 2·code)
        b, h, w, d = code.shape
        dist = torch.cdist(code.reshape(b, h * w, d), self.cluster_centers[None]).view(b, h, w, -1)
        return appearance, motion, dist
