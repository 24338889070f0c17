"""Model registry: ``create_model("paper")``, ``create_model("small", ablation="M2")``."""

from __future__ import annotations

from m2s2l_edge.config import ModelConfig, get_preset, preset_names
from m2s2l_edge.models.m2s2l import M2S2L


def create_model(
    preset: str | ModelConfig = "paper", *, ablation: str | None = None, seed: int | None = None, **overrides
) -> M2S2L:
    """Build M²S²L from a registered preset name (or a config), with an optional ablation M1–M4 and overrides."""
    cfg = preset if isinstance(preset, ModelConfig) else get_preset(preset)
    if overrides:
        cfg = cfg.replace(**overrides)
    if ablation is not None:
        cfg = cfg.with_ablation(ablation)
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    return M2S2L(cfg)


__all__ = ["M2S2L", "ModelConfig", "create_model", "preset_names"]
