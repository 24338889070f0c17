"""FlowNet2-SD (Ilg et al., CVPR 2017), the small-displacement FlowNet used by the peers' flow pipelines: FFP's
training loss (at 384×512), AMMC-Net's precomputed flow and VADMamba's test-time flow (NVIDIA/flownet2-pytorch
sizes, as vendored by jLooo/VADMamba and NjuHaoZhang/AMMCNet_AAAI2021).

Facts carried over: two RGB frames (0..255) minus their per-channel mean, /255, stacked to 6 channels; encoder
3×3 convs 64, 64/2, 128, 128/2, 128, 256/2, 256, 512/2, 512, 512/2, 512, 1024/2, 1024 (bias, LeakyReLU 0.1, no
BatchNorm in the "2-SD" variant); a refinement decoder of 4×4 stride-2 transposed convs 512 / 256 / 128 / 64 with
flow predictions (3×3 convs to 2 channels) at every scale, 4×4 transposed convs upsampling each flow, 3×3
"inter" convs; the flow at 1/4 resolution ×20, bilinearly upsampled ×4. H and W must be multiples of 64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(0.1))


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.1))


class FlowNet2SD(nn.Module):
    """Shapes: frames (B, 3, 2, H, W) in 0..255 (two frames on dim 2) → flow (B, 2, H, W)."""

    ENCODER = ((64, 1), (64, 2), (128, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 2),
               (512, 1), (1024, 2), (1024, 1))

    def __init__(self, height: int = 256, width: int = 256, div_flow: float = 20.0) -> None:
        super().__init__()
        if height % 64 or width % 64:
            raise ValueError(f"FlowNet2-SD needs H and W divisible by 64, got {height}×{width}")
        self.height, self.width, self.div_flow = height, width, div_flow
        convs, cin = [], 6
        for cout, stride in self.ENCODER:
            convs.append(_conv(cin, cout, stride))
            cin = cout
        self.encoder = nn.ModuleList(convs)
        # Decoder level by level (1/32 … 1/4): the skip taken from the encoder, the deconvolution widths.
        skips = (512, 512, 256, 128)  # encoder outputs at 1/32, 1/16, 1/8, 1/4
        outs = (512, 256, 128, 64)
        self.deconvs, self.inter_convs, self.predicts, self.flow_ups = (nn.ModuleList() for _ in range(4))
        self.predict_coarsest = nn.Conv2d(1024, 2, 3, padding=1)
        cin = 1024
        for skip, out in zip(skips, outs, strict=True):
            self.deconvs.append(_deconv(cin, out))
            self.flow_ups.append(nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1))
            cat = skip + out + 2
            self.inter_convs.append(nn.Conv2d(cat, out, 3, padding=1))
            self.predicts.append(nn.Conv2d(out, 2, 3, padding=1))
            cin = cat

    def example_inputs(self, batch: int = 1, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(batch, 3, 2, self.height, self.width, device=device, dtype=dtype),)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        mean = frames.flatten(2).mean(dim=-1)[:, :, None, None, None]  # (B, 3, 1, 1, 1)
        x = (frames - mean) / 255.0
        x = torch.cat([x[:, :, 0], x[:, :, 1]], dim=1)  # (B, 6, H, W)
        feats = []
        for conv in self.encoder:
            x = conv(x)
            feats.append(x)
        # Encoder outputs kept as skips: after conv2_1 (1/4), conv3_1 (1/8), conv4_1 (1/16), conv5_1 (1/32).
        skips = [feats[4], feats[6], feats[8], feats[10]][::-1]
        flow = self.predict_coarsest(x)
        for deconv, flow_up, inter, predict, skip in zip(
            self.deconvs, self.flow_ups, self.inter_convs, self.predicts, skips, strict=True
        ):
            x = torch.cat([skip, deconv(x), flow_up(flow)], dim=1)
            flow = predict(inter(x))
        return F.interpolate(flow * self.div_flow, scale_factor=4, mode="bilinear", align_corners=False)
