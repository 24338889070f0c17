"""VADMamba (Lyu et al., 2025; jLooo/VADMamba): a VM-UNet with vector quantisation for frame prediction plus a
second one that reconstructs optical flow, with FlowNet2-SD computing that flow at test time.

Facts carried over from the public code (``Train_two_stages_flow.py`` / ``Evaluate_flow.py``): the prediction net
takes T = 16 RGB frames (48 channels) at 256×256, the flow net one flow field (2 channels); both are VSSM U-Nets
with 4×4 patch embedding to 64, stages of widths 64 / 128 / 256 / 512 with depth 1 (encoder and decoder), patch
merging (LayerNorm + linear 4C → 2C) down, patch expanding (linear 2C → 4C, pixel rearrangement, LayerNorm) up,
additive skips, a ×4 final expansion to C/4 = 16 channels and a 1×1 conv out; a vector quantiser at the bottleneck
(50 codes for prediction, 10 for flow). Each block is LayerNorm → SS2D (d_state 16, expand 2, depth-wise 3×3 conv,
four scan directions) with a residual, then a residual "RC" branch (LayerNorm, linear C → C, a residual 3×3 / 1×1
conv pair with BatchNorm, BatchNorm). The SS2D here is ours (``m2s2l_edge.layers.ssm.SS2D``, one depth-wise kernel)
and its scans run through ``m2s2l_edge.ops``. At test time FlowNet2-SD runs on the last two frame pairs; the flow
of the last pair is reconstructed. The ``vadmamba`` class in the repo's ``model/VADMamba.py`` (depth 3 flow net)
is not what its training and evaluation scripts build; we follow the scripts.
"""

from __future__ import annotations

import torch
from torch import nn

from m2s2l_edge.layers.ssm import SS2D
from m2s2l_edge.models.baselines.flownet import FlowNet2SD


class _ResidualConv(nn.Module):
    """The "RC" branch. Shapes: x (B, H, W, C) → (B, H, W, C) (added to x by the block)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.convs = nn.Sequential(
            nn.ReLU(), nn.Conv2d(dim, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.ReLU(), nn.Conv2d(dim, dim, 1)
        )
        self.out_norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(self.norm(x)).permute(0, 3, 1, 2)  # (B, C, H, W)
        y = self.out_norm(y + self.convs(y))
        return y.permute(0, 2, 3, 1)


class VSSBlock(nn.Module):
    def __init__(self, dim: int, scan_backend: str = "auto") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ss2d = SS2D(dim, d_state=16, expand=2, ms_kernels=(3,), scan_backend=scan_backend)
        self.rc = _ResidualConv(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ss2d(self.norm(x))
        return x + self.rc(x)


class VMUNetVQ(nn.Module):
    """Shapes: x (B, C_in, H, W) → (B, C_out, H, W); H, W multiples of 32."""

    def __init__(self, in_channels: int, out_channels: int, codes: int, dims: tuple[int, ...] = (64, 128, 256, 512),
                 scan_backend: str = "auto") -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, dims[0], 4, stride=4)
        self.embed_norm = nn.LayerNorm(dims[0])
        self.down_blocks = nn.ModuleList(VSSBlock(d, scan_backend) for d in dims)
        self.merges = nn.ModuleList(nn.Sequential(nn.LayerNorm(4 * d), nn.Linear(4 * d, 2 * d, bias=False))
                                    for d in dims[:-1])
        self.codebook = nn.Embedding(codes, dims[-1])
        up_dims = dims[::-1]
        self.expands = nn.ModuleList(nn.Linear(2 * d, 4 * d, bias=False) for d in up_dims[1:])
        self.expand_norms = nn.ModuleList(nn.LayerNorm(d) for d in up_dims[1:])
        self.up_blocks = nn.ModuleList(VSSBlock(d, scan_backend) for d in up_dims)
        self.final_expand = nn.Linear(dims[0], 4 * dims[0], bias=False)
        self.final_norm = nn.LayerNorm(dims[0] // 4)
        self.final_conv = nn.Conv2d(dims[0] // 4, out_channels, 1)

    @staticmethod
    def _unshuffle_last(x: torch.Tensor, r: int) -> torch.Tensor:
        """(B, H, W, r·r·C) → (B, r·H, r·W, C), channel order (r1, r2, C) as the linear expansion lays it out."""
        b, h, w, c = x.shape
        c //= r * r
        return x.view(b, h, w, r, r, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h * r, w * r, c)

    def _quantise(self, z: torch.Tensor) -> torch.Tensor:
        b, h, w, d = z.shape
        flat = z.reshape(-1, d)
        weight = self.codebook.weight
        dist = flat.pow(2).sum(1, keepdim=True) + weight.pow(2).sum(1) - 2 * flat @ weight.t()  # (B·h·w, codes)
        return weight[dist.argmin(dim=1)].view(b, h, w, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed_norm(self.patch_embed(x).permute(0, 2, 3, 1))  # (B, H/4, W/4, 64)
        skips = []
        for i, block in enumerate(self.down_blocks):
            skips.append(x)
            x = block(x)
            if i < len(self.merges):
                # 2×2 patch merging: the four neighbours side by side on channels.
                x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
                x = self.merges[i](x)
        x = self._quantise(x)
        for i, block in enumerate(self.up_blocks):
            if i > 0:
                x = x + skips[-i]
                x = self.expand_norms[i - 1](self._unshuffle_last(self.expands[i - 1](x), 2))
            x = block(x)
        x = self.final_norm(self._unshuffle_last(self.final_expand(x), 4))  # (B, H, W, 16)
        return self.final_conv(x.permute(0, 3, 1, 2))


class VADMamba(nn.Module):
    """Test-time pipeline. Shapes: frames (B, 3·(T+1), H, W) in [-1, 1], T = 16 (the 17th frame is the target)
    → predicted frame (B, 3, H, W), reconstructed flow (B, 2, H, W).

    ``with_flow=False`` leaves FlowNet2-SD out: ``forward(frames, flow)`` then takes the flow (B, 2, H, W).
    """

    def __init__(self, clip_len: int = 16, image_size: int = 256, with_flow: bool = True,
                 scan_backend: str = "auto") -> None:
        super().__init__()
        self.clip_len, self.channels, self.image_size, self.with_flow = clip_len, 3, image_size, with_flow
        self.predictor = VMUNetVQ(3 * clip_len, 3, codes=50, scan_backend=scan_backend)
        self.flow_reconstructor = VMUNetVQ(2, 2, codes=10, scan_backend=scan_backend)
        self.flownet = FlowNet2SD(image_size, image_size) if with_flow else None

    def example_inputs(self, batch: int = 1, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        s, t = self.image_size, self.clip_len
        frames = torch.zeros(batch, 3 * (t + 1), s, s, device=device, dtype=dtype)
        if self.with_flow:
            return (frames,)
        return frames, torch.zeros(batch, 2, s, s, device=device, dtype=dtype)

    def forward(self, frames: torch.Tensor, flow: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.clip_len
        if self.flownet is not None:
            b, _, h, w = frames.shape
            clip = frames.view(b, t + 1, 3, h, w)
            # Frame pairs (T−2, T−1) and (T−1, T), as the evaluation computes them; the last one is reconstructed.
            pairs = torch.stack([clip[:, t - 2:t], clip[:, t - 1:t + 1]], dim=3)  # (B, 2, 3, 2, H, W)
            flows = self.flownet((pairs.flatten(0, 1) + 1) * 127.5) / 255.0  # (B·2, 2, H, W)
            flow = flows.view(b, 2, 2, h, w)[:, 1]
        elif flow is None:
            raise ValueError("VADMamba(with_flow=False) needs the flow (B, 2, H, W) as its second input")
        pred = self.predictor(frames[:, : 3 * t])
        return pred, self.flow_reconstructor(flow)
