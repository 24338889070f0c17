"""M²S²L: dual-stream, multi-scale Mamba model for video anomaly detection (frame prediction + motion prediction).

Data flow (paper preset: T = 4, 256×256, C = 256, fused grid 16×16):

    clip (B, T, 3, H, W) ──stack──► (B, 3T, H, W)
      spatial:  patch p ∈ {8, 16, 32} → MS-VSSB blocks → maps S_p (B, C, H/p, W/p)
                → resize to H/16 → adaptive scale weights → F_s (B, C, 16, 16)
      temporal: window w ∈ {1, 2, 3}: x_t − x_{t−w} → patch 16 → +PE → TMB over (t, h, w) tokens → mean over t
                → attention over windows → F_t (B, C, 16, 16)
      fuse 1×1 conv [F_s, F_t] → F → gates → common / appearance / motion → three memory banks
      finer maps (S_8, (B, C, 32, 32)) → a memory bank each → the decoders' multi-scale inputs
      appearance decoder [common, appearance], S_8 read → next frame (B, 3, H, W)
      motion decoder     [common, motion],     S_8 read → x_{T+1} − x_T (B, 3, H, W)

Nothing reaches the decoders except through the Mamba encoders and the memory banks (no pixel path).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from m2s2l_edge.config import ModelConfig
from m2s2l_edge.layers.corruption import InputCorruption
from m2s2l_edge.layers.decoder import Decoder
from m2s2l_edge.layers.fusion import FeatureDecomposition, ScaleAttention
from m2s2l_edge.layers.memory import MemoryBank
from m2s2l_edge.layers.ssm import MSVSSBlock, TemporalMambaBlock

# Top-level submodules grouped as the profiler reports them.
MODULE_GROUPS = {
    "spatial": ("patch_embeds", "embed_norms", "spatial_blocks", "spatial_fuse"),
    "temporal": ("motion_embeds", "temporal_blocks", "temporal_fuse", "scale_embed"),
    "decomposition": ("fuse", "decomposition"),
    "memory": ("memories", "level_memories"),
    "decoders": ("appearance_decoder", "motion_decoder"),
}


def sinusoidal_encoding(length: int, dim: int) -> torch.Tensor:
    """Transformer sinusoidal positional encoding, shape (length, dim)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class M2S2L(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, t = cfg.dim, cfg.clip_len
        ssm = dict(d_state=cfg.d_state, expand=cfg.expand, dt_min=cfg.dt_min, dt_max=cfg.dt_max,
                   scan_backend=cfg.scan_backend)

        # Spatial stream: all T frames stacked on channels, or the last one alone (cfg.spatial_input).
        frames = t if cfg.spatial_input == "clip" else 1
        self.patch_embeds = nn.ModuleList(
            nn.Conv2d(cfg.in_channels * frames, c, p, stride=p) for p in cfg.active_patch_sizes
        )
        self.embed_norms = nn.ModuleList(nn.LayerNorm(c) for _ in cfg.active_patch_sizes)
        self.spatial_blocks = nn.ModuleList(
            nn.Sequential(*(MSVSSBlock(c, ratio, ms_kernels=cfg.ms_kernels, **ssm) for _ in range(depth)))
            for depth, ratio in zip(cfg.active_spatial_depths, cfg.active_spatial_mlp_ratios, strict=True)
        )
        multi = len(cfg.active_patch_sizes) > 1
        self.spatial_fuse = ScaleAttention(c, per_position=False) if multi else None

        # Temporal stream. Scale-specific Δ: a window of w frames covers w× the time per step, so its Δ range is
        # initialised w× smaller (our reading of "scale-specific step parameters").
        tp = cfg.fused_stride
        self.motion_embeds = nn.ModuleList(nn.Conv2d(cfg.in_channels, c, tp, stride=tp) for _ in cfg.active_windows)
        self.register_buffer("temporal_pe", sinusoidal_encoding(t, c), persistent=False)
        self.scale_embed = nn.Parameter(torch.zeros(len(cfg.active_windows), c))
        self.temporal_blocks = nn.ModuleList(
            nn.Sequential(
                *(
                    TemporalMambaBlock(
                        c, d_state=cfg.d_state, expand=cfg.expand, d_conv=cfg.d_conv, dt_min=cfg.dt_min / w,
                        dt_max=cfg.dt_max / w, scan_backend=cfg.scan_backend,
                    )
                    for _ in range(cfg.temporal_depth)
                )
            )
            for w in cfg.active_windows
        )
        self.temporal_fuse = ScaleAttention(c, per_position=True) if len(cfg.active_windows) > 1 else None

        # Fusion, decomposition, memory.
        self.fuse = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c), nn.GELU())
        self.decomposition = FeatureDecomposition(c) if cfg.decompose else None
        n_banks = 3 if cfg.decompose else 1
        self.memories = (
            nn.ModuleList(MemoryBank(cfg.memory_items, c, with_query=cfg.memory_query) for _ in range(n_banks))
            if cfg.use_memory else None
        )

        # Decoders: the fused features (through the memory) and, at each finer grid, that spatial encoder's own map
        # (through a memory bank of its own when cfg.level_memory).
        per_part = (2 * c if cfg.memory_query else c) if cfg.use_memory else c
        dec_in = 2 * per_part if cfg.decompose else per_part
        levels = cfg.level_patch_sizes
        level_query = cfg.memory_query and cfg.level_query
        self.level_memories = (
            nn.ModuleList(MemoryBank(cfg.memory_items, c, with_query=level_query) for _ in levels)
            if cfg.use_memory and cfg.level_memory else None
        )
        per_level = (2 * c if level_query else c) if self.level_memories is not None else c
        # Decoder stage i (after the i-th ×2 upsampling) works at stride fused_stride / 2^(i+1).
        strides = [cfg.fused_stride >> (i + 1) for i in range(cfg.upsample_stages)]
        level_channels = tuple(per_level if s in levels else 0 for s in strides)
        separable = cfg.decoder_conv == "separable"
        self.appearance_decoder = Decoder(dec_in, cfg.decoder_channels, level_channels, out_scale=1.0,
                                          separable=separable)
        self.motion_decoder = Decoder(dec_in, cfg.decoder_channels, level_channels, out_scale=2.0,
                                      separable=separable)
        self.corruption = InputCorruption(cfg.corruption_prob, cfg.corruption_kind, cfg.corruption_min_side)
        self._level_strides = strides

    # -- checks -------------------------------------------------------------------------------------------------
    def check_input(self, clip: torch.Tensor) -> None:
        cfg = self.cfg
        expected = ("B", cfg.clip_len, cfg.in_channels, cfg.image_size, cfg.image_size)
        if clip.dim() != 5:
            raise ValueError(f"clip must be (B, T, C, H, W) = {expected}, got {tuple(clip.shape)}")
        for i, (name, want) in enumerate(zip(("B", "T", "C", "H", "W"), expected, strict=True)):
            if i > 0 and clip.shape[i] != want:
                raise ValueError(
                    f"clip dimension {i} ({name}) is {clip.shape[i]}, expected {want} for preset {cfg.name!r} "
                    f"(clip shape (B, T, C, H, W) = {expected}, got {tuple(clip.shape)})"
                )
        if not clip.is_floating_point():
            raise ValueError(f"clip must be floating point in [-1, 1], got {clip.dtype}")

    # -- streams ------------------------------------------------------------------------------------------------
    def _spatial_maps(self, stacked: torch.Tensor) -> list[torch.Tensor]:
        """Each spatial encoder's own feature map, (B, C, H/p, W/p) for p in cfg.active_patch_sizes."""
        maps = []
        for embed, norm, blocks in zip(self.patch_embeds, self.embed_norms, self.spatial_blocks, strict=True):
            f = norm(embed(stacked).permute(0, 2, 3, 1))  # (B, h_p, w_p, C)
            maps.append(blocks(f).permute(0, 3, 1, 2))  # (B, C, h_p, w_p)
        return maps

    def _spatial(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """The encoders' maps resized to the fused grid and weighted by scale: F_s (B, C, h, w)."""
        size = self.cfg.fused_size
        feats = []
        for f in maps:
            if f.shape[-1] > size:
                f = F.avg_pool2d(f, f.shape[-1] // size)
            elif f.shape[-1] < size:
                f = F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False)
            feats.append(f)
        if self.spatial_fuse is None:
            return feats[0]
        return self.spatial_fuse(torch.stack(feats, dim=1))  # (B, C, h, w)

    def _temporal(self, clip: torch.Tensor) -> torch.Tensor:
        b, t = clip.shape[:2]
        feats = []
        for i, (w, embed, blocks) in enumerate(
            zip(self.cfg.active_windows, self.motion_embeds, self.temporal_blocks, strict=True)
        ):
            n = t - w
            diff = (clip[:, w:] - clip[:, :-w]).flatten(0, 1)  # (B·n, 3, H, W)
            tok = embed(diff)  # (B·n, C, h, w)
            c, h, ww = tok.shape[1:]
            tok = tok.view(b, n, c, h, ww).permute(0, 1, 3, 4, 2)  # (B, n, h, w, C)
            tok = tok + self.temporal_pe[:n, None, None, :] + self.scale_embed[i]
            tok = blocks(tok.reshape(b, n * h * ww, c))  # (B, n·h·w, C), time-major
            feats.append(tok.view(b, n, h, ww, c).mean(dim=1).permute(0, 3, 1, 2))  # (B, C, h, w)
        if self.temporal_fuse is None:
            return feats[0]
        return self.temporal_fuse(torch.stack(feats, dim=1))  # (B, C, h, w)

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(self, clip: torch.Tensor) -> dict[str, torch.Tensor]:
        """clip (B, T, 3, H, W) in [-1, 1] → frame_pred (B, 3, H, W), motion_pred (B, 3, H, W) and, for the
        losses, the decomposed features and memory terms."""
        self.check_input(clip)
        clip = self.corruption(clip)  # training only: foreign boxes in the input, the target stays clean
        b, t, ch, h, w = clip.shape
        # (B, 3T, H, W), or (B, 3, H, W) with the last frame alone
        stacked = clip.reshape(b, t * ch, h, w) if self.cfg.spatial_input == "clip" else clip[:, -1]
        maps = self._spatial_maps(stacked)
        fused = self.fuse(torch.cat([self._spatial(maps), self._temporal(clip)], dim=1))  # (B, C, h, w)

        out: dict[str, torch.Tensor] = {}
        if self.decomposition is not None:
            parts = self.decomposition(fused)
            out.update(common=parts[0], appearance=parts[1], motion=parts[2])
        else:
            parts = (fused,)
        if self.memories is not None:
            read = []
            for name, mem, part in zip(("common", "appearance", "motion"), self.memories, parts, strict=False):
                r, losses = mem(part)
                read.append(r)
                for k, v in losses.items():
                    out[f"memory_{k}_{name}"] = v
            parts = tuple(read)
        if len(parts) == 3:
            app_in = torch.cat([parts[0], parts[1]], dim=1)
            mot_in = torch.cat([parts[0], parts[2]], dim=1)
        else:
            app_in = mot_in = parts[0]
        levels = self._levels(maps, out)
        out["frame_pred"] = self.appearance_decoder(app_in, levels)
        out["motion_pred"] = self.motion_decoder(mot_in, levels)
        return out

    def _levels(self, maps: list[torch.Tensor], out: dict[str, torch.Tensor]) -> list[torch.Tensor | None]:
        """The decoders' input at each upsampling stage (coarsest first): the spatial encoder map of that grid,
        read through its memory bank, or None where no encoder works at that grid."""
        by_stride = dict(zip(self.cfg.active_patch_sizes, maps, strict=True))
        levels: list[torch.Tensor | None] = []
        for stride in self._level_strides:
            f = by_stride.get(stride) if stride in self.cfg.level_patch_sizes else None
            if f is not None and self.level_memories is not None:
                f, losses = self.level_memories[self.cfg.level_patch_sizes.index(stride)](f)
                for k, v in losses.items():
                    out[f"memory_{k}_level{stride}"] = v
            levels.append(f)
        return levels

    def predict(self, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference outputs only: (frame_pred, motion_pred), each (B, 3, H, W)."""
        out = self.forward(clip)
        return out["frame_pred"], out["motion_pred"]

