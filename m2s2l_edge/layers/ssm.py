"""State-space layers: SS2D / MS-VSSB for the spatial stream, the Temporal Mamba Block for the motion stream.

Parameter names follow mamba-ssm and VMamba (``in_proj``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``,
``d_state``, ``d_conv``, ``expand``, ``dt_rank``) so checkpoints and readers map 1:1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from m2s2l_edge.ops.causal_conv import causal_conv1d
from m2s2l_edge.ops.dispatch import selective_scan


def _dt_bias_init(d_inner: int, dt_min: float, dt_max: float) -> torch.Tensor:
    """mamba-ssm's Δ initialisation: dt log-uniform in [dt_min, dt_max], stored as softplus⁻¹(dt)."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))


def _scan_param_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the scan parameters (A, D, Δ bias) go in with: float32 (the scan's state type) for float32 and FP16
    activations, float64 for a float64 model (the parity reference), so nothing is rounded to float32 there."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _A_log_init(channels: int, d_state: int) -> torch.Tensor:
    """S4D-real initialisation: A[:, n] = -(n + 1)."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(channels, 1).contiguous()


class SS2D(nn.Module):
    """2-D selective scan over four directions (VMamba), with MS-VSSB's parallel depth-wise convolutions.

    Shapes: x (B, H, W, C) → (B, H, W, C). Inside: d_inner = expand·C channels, K = 4 directions, L = H·W.
    """

    K = 4

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        expand: int = 2,
        ms_kernels: tuple[int, ...] = (3, 5, 7),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.d_inner = d_inner = expand * dim
        self.d_state = d_state
        self.dt_rank = dt_rank = math.ceil(dim / 16)
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        # MS-VSSB: parallel depth-wise convolutions of several kernel sizes, summed (paper Eq. 1; sum is our choice).
        self.ms_convs = nn.ModuleList(
            nn.Conv2d(d_inner, d_inner, k, padding=k // 2, groups=d_inner) for k in ms_kernels
        )
        # Per-direction projections stored stacked, as VMamba does: one batched matmul serves all four directions.
        self.x_proj_weight = nn.Parameter(torch.randn(self.K, dt_rank + 2 * d_state, d_inner) * d_inner**-0.5)
        self.dt_projs_weight = nn.Parameter(torch.randn(self.K, d_inner, dt_rank) * dt_rank**-0.5)
        self.dt_projs_bias = nn.Parameter(torch.stack([_dt_bias_init(d_inner, dt_min, dt_max) for _ in range(self.K)]))
        self.A_log = nn.Parameter(_A_log_init(self.K * d_inner, d_state))
        self.D = nn.Parameter(torch.ones(self.K * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def _multi_scale_conv(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the depth-wise convolutions (not ``sum()``, whose ``0 + t`` costs one more kernel)."""
        out = self.ms_convs[0](x)
        for conv in self.ms_convs[1:]:
            out = out + conv(x)
        return out

    @torch.no_grad()
    def merge_ms_convs(self) -> bool:
        """Replace the parallel depth-wise convolutions by one with the largest kernel (inference re-parameterisation).

        Each k×k kernel is zero-padded to k_max×k_max about its centre and the kernels and biases are summed: with
        stride 1 and 'same' padding k // 2 that is the same linear map (one rounding of the summed weights), one
        convolution instead of len(ms_convs), and fewer MACs (49 instead of 9 + 25 + 49 per position for 3/5/7).
        Returns False (and changes nothing) when there is nothing to merge or a convolution is not of that form.
        """
        convs = list(self.ms_convs)
        if len(convs) < 2:
            return False
        for conv in convs:
            k = conv.kernel_size[0]
            if not (conv.kernel_size == (k, k) and k % 2 == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1)
                    and conv.padding == (k // 2, k // 2) and conv.padding_mode == "zeros"
                    and conv.groups == conv.in_channels == conv.out_channels == self.d_inner):
                return False
        k_max = max(conv.kernel_size[0] for conv in convs)
        ref = convs[0].weight
        merged = nn.Conv2d(self.d_inner, self.d_inner, k_max, padding=k_max // 2, groups=self.d_inner,
                           bias=any(conv.bias is not None for conv in convs), device=ref.device, dtype=ref.dtype)
        weight = torch.zeros(self.d_inner, 1, k_max, k_max, dtype=torch.float64, device=ref.device)
        bias = torch.zeros(self.d_inner, dtype=torch.float64, device=ref.device)
        for conv in convs:
            off = (k_max - conv.kernel_size[0]) // 2
            weight[:, :, off:k_max - off, off:k_max - off] += conv.weight.double()
            if conv.bias is not None:
                bias += conv.bias.double()
        merged.weight.copy_(weight.to(ref.dtype))
        if merged.bias is not None:
            merged.bias.copy_(bias.to(ref.dtype))
        self.ms_convs = nn.ModuleList([merged])
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        length = h * w
        x, z = self.in_proj(x).chunk(2, dim=-1)  # (B, H, W, d_inner) each
        x = x.permute(0, 3, 1, 2)  # (B, d_inner, H, W)
        x = F.silu(self._multi_scale_conv(x))
        # Directions: row-major, column-major, and both reversed.
        row = x.flatten(2)  # (B, d_inner, L)
        col = x.transpose(2, 3).flatten(2)  # (B, d_inner, L)
        xs = torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)  # (B, K, d_inner, L)
        pdt = _scan_param_dtype(xs)
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # (B, K, R + 2N, L)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # (B, K, d_inner, L)
        y = selective_scan(
            xs.reshape(b, self.K * self.d_inner, length),
            dts.reshape(b, self.K * self.d_inner, length),
            -torch.exp(self.A_log.to(pdt)),
            Bs.contiguous(),  # (B, K, N, L)
            Cs.contiguous(),
            self.D.to(pdt),
            None,
            self.dt_projs_bias.to(pdt).flatten(),
            True,
            backend=self.scan_backend,
        ).view(b, self.K, self.d_inner, length)  # (B, K, d_inner, L)
        # Undo each direction's ordering and merge.
        y_row = y[:, 0] + y[:, 2].flip(-1)  # (B, d_inner, L) in row-major order
        y_col = (y[:, 1] + y[:, 3].flip(-1)).view(b, self.d_inner, w, h).transpose(2, 3).flatten(2)
        y = (y_row + y_col).transpose(1, 2).view(b, h, w, self.d_inner)  # (B, H, W, d_inner)
        y = self.out_norm(y) * F.silu(z)
        return self.out_proj(y)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MSVSSBlock(nn.Module):
    """Multi-Scale Visual State Space Block: x + SS2D(LN(x)), then x + MLP(LN(x)). Shapes: (B, H, W, C)."""

    def __init__(self, dim: int, mlp_ratio: float, **ss2d_kwargs) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ss2d = SS2D(dim, **ss2d_kwargs)
        hidden = int(dim * mlp_ratio)
        self.mlp = MLP(dim, hidden) if hidden > 0 else None
        self.norm2 = nn.LayerNorm(dim) if hidden > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ss2d(self.norm(x))
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x


class MambaMixer(nn.Module):
    """Mamba (S6) mixer over a 1-D token sequence, with the SiLU gate z passed into the scan (mamba-ssm style).

    Shapes: x (B, L, C) → (B, L, C); one scan with K = 1 group over d_inner = expand·C channels. The depth-wise
    causal convolution before the scan goes through ``ops.causal_conv`` (``conv_backend``: auto uses causal-conv1d's
    fused kernel on CUDA where it is installed); its weights stay an ``nn.Conv1d`` (``conv1d.weight`` (d_inner, 1,
    d_conv), ``conv1d.bias``), mamba-ssm's layout, and an export holds the standard convolution.
    """

    def __init__(
        self,
        dim: int,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        scan_backend: str = "auto",
        conv_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.d_inner = d_inner = expand * dim
        self.d_state = d_state
        self.dt_rank = dt_rank = math.ceil(dim / 16)
        self.scan_backend = scan_backend
        self.conv_backend = conv_backend
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        with torch.no_grad():
            self.dt_proj.bias.copy_(_dt_bias_init(d_inner, dt_min, dt_max))
        self.A_log = nn.Parameter(_A_log_init(d_inner, d_state))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(x).transpose(1, 2)  # (B, 2·d_inner, L)
        x, z = xz.chunk(2, dim=1)  # (B, d_inner, L) each
        x = causal_conv1d(x, self.conv1d.weight, self.conv1d.bias, "silu", backend=self.conv_backend)  # (B, d_inner, L)
        x_dbl = self.x_proj(x.transpose(1, 2))  # (B, L, R + 2N)
        dt, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = torch.matmul(self.dt_proj.weight, dt.transpose(1, 2))  # (B, d_inner, L); bias goes in as delta_bias
        pdt = _scan_param_dtype(x)
        y = selective_scan(
            x.contiguous(),
            dt.contiguous(),
            -torch.exp(self.A_log.to(pdt)),
            Bs.transpose(1, 2).unsqueeze(1).contiguous(),  # (B, 1, N, L)
            Cs.transpose(1, 2).unsqueeze(1).contiguous(),
            self.D.to(pdt),
            z.contiguous(),
            self.dt_proj.bias.to(pdt),
            True,
            backend=self.scan_backend,
        )  # (B, d_inner, L)
        return self.out_proj(y.transpose(1, 2))


class TemporalMambaBlock(nn.Module):
    """TMB: x + Mamba(LN(x)) over spatio-temporal tokens; Δ is initialised per temporal scale (scale-specific Δ).

    Shapes: x (B, L, C) with L = frames·h·w in time-major order.
    """

    def __init__(self, dim: int, **mixer_kwargs) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixer = MambaMixer(dim, **mixer_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))
