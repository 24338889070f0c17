"""FFP, future frame prediction (Liu et al., CVPR 2018; StevenLiuWen/ano_pred_cvpr2018).

Facts carried over from the public TensorFlow code: the generator is a U-Net with 4 levels, 64 features at the
first level doubling per level, two 3×3 conv + ReLU (with bias) per level, 2×2 max pooling, 2×2 stride-2
transposed convolutions (+ ReLU) up, skip concatenation, a 3×3 conv to 3 channels and tanh; input T = 4 RGB frames
stacked on channels at 256×256. Only the generator runs at test time. Training adds a pix2pix patch discriminator
(4×4 stride-2 convs 128 / 256 / 512, then 512 and 1 at stride 1, reflection padding 2, leaky ReLU) and FlowNet-SD
at 384×512 for the flow loss (``m2s2l_edge.models.baselines.flownet``).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())


class FFPGenerator(nn.Module):
    """Shapes: frames (B, T·C, H, W) in [-1, 1] → next frame (B, C, H, W)."""

    def __init__(self, clip_len: int = 4, channels: int = 3, image_size: int = 256, levels: int = 4,
                 features: int = 64) -> None:
        super().__init__()
        self.clip_len, self.channels, self.image_size = clip_len, channels, image_size
        widths = [features * 2**i for i in range(levels)]
        cin = clip_len * channels
        self.down = nn.ModuleList()
        for w in widths:
            self.down.append(nn.Sequential(_conv_relu(cin, w), _conv_relu(w, w)))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList()
        self.up_convs = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.ups.append(nn.Sequential(nn.ConvTranspose2d(2 * w, w, 2, stride=2), nn.ReLU()))
            self.up_convs.append(nn.Sequential(_conv_relu(2 * w, w), _conv_relu(w, w)))
        self.head = nn.Conv2d(widths[0], channels, 3, padding=1)

    def example_inputs(self, batch: int = 1, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        s = self.image_size
        return (torch.zeros(batch, self.clip_len * self.channels, s, s, device=device, dtype=dtype),)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        skips = []
        x = frames
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        for up, conv, skip in zip(self.ups, self.up_convs, reversed(skips[:-1]), strict=True):
            x = conv(torch.cat([skip, up(x)], dim=1))
        return torch.tanh(self.head(x))

    def predict(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """M²S²L's interface: clip (B, T, C, H, W) → (frame_pred, frame_pred − last frame)."""
        b, t, c, h, w = clip.shape
        frame = self.forward(clip.reshape(b, t * c, h, w))
        return frame, frame - clip[:, -1]


class PatchDiscriminator(nn.Module):
    """pix2pix patch discriminator as FFP configures it. Shapes: frame (B, C, H, W) → logits (B, 1, h, w)."""

    def __init__(self, channels: int = 3, filters: tuple[int, ...] = (128, 256, 512, 512), image_size: int = 256):
        super().__init__()
        self.channels, self.image_size = channels, image_size
        layers: list[nn.Module] = []
        cin = channels
        for i, f in enumerate(filters):
            stride = 1 if i == len(filters) - 1 else 2
            layers += [nn.ReflectionPad2d(2), nn.Conv2d(cin, f, 4, stride=stride), nn.LeakyReLU(0.2)]
            cin = f
        layers += [nn.ReflectionPad2d(2), nn.Conv2d(cin, 1, 4)]
        self.net = nn.Sequential(*layers)

    def example_inputs(self, batch: int = 1, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        s = self.image_size
        return (torch.zeros(batch, self.channels, s, s, device=device, dtype=dtype),)

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        return self.net(frame)
