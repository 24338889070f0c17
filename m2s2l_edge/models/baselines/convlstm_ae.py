"""ConvLSTM-AE (Luo et al., "Remembering history with convolutional LSTM for anomaly detection", ICME 2017;
zachluo/convlstm_anomaly_detection, Caffe).

Facts carried over from its deploy.prototxt: T = 10 grey frames at 225×225, each encoded by conv 128 of 7×7
stride 4 (pad 3) → conv 256 of 5×5 stride 2 (pad 2) → conv 512 of 3×3 stride 2 (pad 1), ReLU after each; one
convolutional LSTM with 512 hidden maps, 3×3 input-to-state (with bias) and 3×3 state-to-state (no bias) kernels,
no peepholes; two deconvolution branches of the same shape (256 of 3×3 s2, 128 of 5×5 s2, 1 of 7×7 s4, ReLU, ReLU,
tanh): one reconstructs all T frames, the other predicts frame t+1 from the LSTM state of steps 2..T.
"""

from __future__ import annotations

import torch
from torch import nn


def _decoder() -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(512, 256, 3, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(256, 128, 5, stride=2, padding=2), nn.ReLU(),
        nn.ConvTranspose2d(128, 1, 7, stride=4, padding=3), nn.Tanh(),
    )


class ConvLSTMCell(nn.Module):
    """Shapes: x (B, C_in, h, w), state (h, c) each (B, C, h, w) → new state."""

    def __init__(self, cin: int, hidden: int, kernel: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.wx = nn.Conv2d(cin, 4 * hidden, kernel, padding=kernel // 2)
        self.wh = nn.Conv2d(hidden, 4 * hidden, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        gates = self.wx(x)
        if state is not None:  # the first step starts from a zero state: its recurrent convolution is skipped
            gates = gates + self.wh(state[0])
        i, f, o, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(i) * torch.tanh(g)
        if state is not None:
            c = c + torch.sigmoid(f) * state[1]
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTMAE(nn.Module):
    """Shapes: clip (B, T, 1, H, W) → reconstruction (B, T, 1, H, W), prediction of frames 2..T (B, T−1, 1, H, W)."""

    def __init__(self, clip_len: int = 10, image_size: int = 225) -> None:
        super().__init__()
        self.clip_len, self.channels, self.image_size = clip_len, 1, image_size
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 128, 7, stride=4, padding=3), nn.ReLU(),
            nn.Conv2d(128, 256, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv2d(256, 512, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.lstm = ConvLSTMCell(512, 512)
        self.reconstruct = _decoder()
        self.predict_next = _decoder()

    def example_inputs(self, batch: int = 1, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
        s = self.image_size
        return (torch.zeros(batch, self.clip_len, 1, s, s, device=device, dtype=dtype),)

    def forward(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t = clip.shape[:2]
        feats = self.encoder(clip.flatten(0, 1))  # (B·T, 512, h, w)
        feats = feats.view(b, t, *feats.shape[1:])
        state = None
        hidden = []
        for step in range(t):
            state = self.lstm(feats[:, step], state)
            hidden.append(state[0])
        hs = torch.stack(hidden, dim=1)  # (B, T, 512, h, w)
        recon = self.reconstruct(hs.flatten(0, 1))
        pred = self.predict_next(hs[:, 1:].flatten(0, 1))
        size = recon.shape[-2:]
        return recon.view(b, t, 1, *size), pred.view(b, t - 1, 1, *size)
