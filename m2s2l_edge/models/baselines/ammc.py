"""AMMC-Net, appearance-motion memory consistency network (Cai et al., AAAI 2021; NjuHaoZhang/AMMCNet_AAAI2021).

Facts carried over from the public code and its shipped test parameters (``unet_vq_twostream``, inputs (12, 6),
outputs (3, 2), embed_dim 64, n_embed 256, k 2): two U-Nets (double 3×3 conv without bias + BatchNorm + ReLU,
widths 64 / 128 / 256 / 512, 2×2 transposed convs up, 3×3 output conv, tanh), one on T = 4 RGB frames (12
channels), one on 3 optical-flow fields (6 channels), at 256×256; at the bottleneck of each a residual top-k vector
quantiser (1×1 conv 512 → 64, nearest k = 2 of 256 codes, 1×1 conv 128 → 512); a bridge of two double convs that
add each stream's code to the other. The codebooks are EMA state (buffers), not parameters. The flow is precomputed
by FlowNet2-SD in the authors' pipeline; ``AMMCNetWithFlow`` computes it in the same pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from m2s2l_edge.models.baselines.flownet import FlowNet2SD


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
    )


class TopKQuantizer(nn.Module):
    """Residual top-k vector quantisation. Shapes: x (B, C, h, w) → x + dec(codes of the k nearest) (B, C, h, w)."""

    def __init__(self, channels: int, embed_dim: int = 64, n_embed: int = 256, k: int = 2) -> None:
        super().__init__()
        self.k = k
        self.enc = nn.Conv2d(channels, embed_dim, 1)
        self.register_buffer("embed", torch.randn(embed_dim, n_embed))
        self.dec = nn.Conv2d(embed_dim * k, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.enc(x).permute(0, 2, 3, 1)  # (B, h, w, E)
        b, h, w, e = z.shape
        flat = z.reshape(-1, e)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed + self.embed.pow(2).sum(0, keepdim=True)
        idx = dist.topk(self.k, dim=1, largest=False).indices  # (B·h·w, k)
        codes = F.embedding(idx, self.embed.t()).view(b, h, w, self.k * e).permute(0, 3, 1, 2)  # (B, k·E, h, w)
        return x + self.dec(codes)


class _UNetVQ(nn.Module):
    def __init__(self, cin: int, cout: int, **vq) -> None:
        super().__init__()
        self.inc = _double_conv(cin, 64)
        self.downs = nn.ModuleList(_double_conv(a, b) for a, b in ((64, 128), (128, 256), (256, 512)))
        self.vq = TopKQuantizer(512, **vq)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in (512, 256, 128))
        self.up_convs = nn.ModuleList(_double_conv(c, c // 2) for c in (512, 256, 128))
        self.outc = nn.Conv2d(64, cout, 3, padding=1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        return self.vq(skips[-1]), skips[:-1]  # bottleneck (B, 512, H/8, W/8), skips at 1, 1/2, 1/4

    def decode(self, z: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for up, conv, skip in zip(self.ups, self.up_convs, reversed(skips), strict=True):
            z = conv(torch.cat([skip, up(z)], dim=1))
        return torch.tanh(self.outc(z))


class AMMCNet(nn.Module):
    """Shapes: frames (B, 12, H, W), flows (B, 6, H, W) → next frame (B, 3, H, W), next flow (B, 2, H, W)."""

    def __init__(self, clip_len: int = 4, image_size: int = 256, embed_dim: int = 64, n_embed: int = 256,
                 k: int = 2) -> None:
        super().__init__()
        self.clip_len, self.channels, self.image_size = clip_len, 3, image_size
        vq = dict(embed_dim=embed_dim, n_embed=n_embed, k=k)
        self.rgb = _UNetVQ(3 * clip_len, 3, **vq)
        self.flow = _UNetVQ(2 * (clip_len - 1), 2, **vq)
        self.rgb_from_flow = _double_conv(512, 512)
        self.flow_from_rgb = _double_conv(512, 512)

    def example_inputs(self, batch: int = 1, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        s, t = self.image_size, self.clip_len
        return (torch.zeros(batch, 3 * t, s, s, device=device, dtype=dtype),
                torch.zeros(batch, 2 * (t - 1), s, s, device=device, dtype=dtype))

    def forward(self, frames: torch.Tensor, flows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zr, skips_r = self.rgb.encode(frames)
        zf, skips_f = self.flow.encode(flows)
        zr, zf = zr + self.rgb_from_flow(zf), zf + self.flow_from_rgb(zr)
        return self.rgb.decode(zr, skips_r), self.flow.decode(zf, skips_f)


class AMMCNetWithFlow(nn.Module):
    """AMMC-Net with its flow computed in the same pass: FlowNet2-SD on each of the T − 1 consecutive frame pairs.

    Shapes: frames (B, 3·T, H, W) in [-1, 1] → as ``AMMCNet``.
    """

    def __init__(self, clip_len: int = 4, image_size: int = 256, **kw) -> None:
        super().__init__()
        self.clip_len, self.channels, self.image_size = clip_len, 3, image_size
        self.net = AMMCNet(clip_len, image_size, **kw)
        self.flownet = FlowNet2SD(image_size, image_size)

    def example_inputs(self, batch: int = 1, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        return self.net.example_inputs(batch, device, dtype)[:1]

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = frames.shape
        clip = frames.view(b, self.clip_len, 3, h, w)
        pairs = torch.stack([clip[:, :-1], clip[:, 1:]], dim=3)  # (B, T−1, 3, 2, H, W)
        rgb255 = (pairs.flatten(0, 1) + 1) * 127.5  # FlowNet takes 0..255
        flows = self.flownet(rgb255).view(b, -1, h, w)  # (B, 2(T−1), H, W)
        return self.net(frames, flows)
