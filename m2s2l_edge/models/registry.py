"""Model registry: our model and its peers by name (``build_model("mnad")``, ``list_models(family="peer")``).

"ours" are the M²S²L presets and ablations; "peer" are the paper's baselines rebuilt in ``baselines/``. Builders
import their module only when called, so listing the registry is cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

Family = Literal["ours", "peer", "component"]


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture. ``build(**kw)`` returns the module; ``source`` says where its facts come from."""

    name: str
    family: Family
    summary: str
    source: str
    build: Callable[..., nn.Module]


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, family: Family, summary: str, source: str) -> Callable:
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, family, summary, source, fn)
        return fn

    return wrap


def list_models(family: Family | None = None) -> list[str]:
    """Registered names, ours first, in registration order."""
    return [n for n, e in _REGISTRY.items() if family is None or e.family == family]


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(_REGISTRY)}") from None


def build_model(name: str, **kw) -> nn.Module:
    """Build a registered architecture with fresh weights; ``kw`` go to its constructor."""
    return get_entry(name).build(**kw)


TRAINABLE = ("m2s2l", "mnad", "ffp")


def create_trainable(name: str, cfg):
    """A model ``train`` / ``eval`` can run: M²S²L from ``cfg``, or a peer predictor sized by ``cfg`` (clip length,
    resolution) with M²S²L's interface (``m2s2l_edge.models.baselines.predictor``)."""
    if name not in TRAINABLE:
        raise ValueError(f"--model {name!r} cannot be trained here; valid: {', '.join(TRAINABLE)}")
    if name == "m2s2l":
        from m2s2l_edge.models.m2s2l import M2S2L

        return M2S2L(cfg)
    from m2s2l_edge.models.baselines.predictor import PeerPredictor

    return PeerPredictor(name, cfg)


def _lazy(module: str, attr: str) -> Callable[..., nn.Module]:
    def build(**kw) -> nn.Module:
        return getattr(importlib.import_module(f"m2s2l_edge.models.{module}"), attr)(**kw)

    return build


# -- ours -------------------------------------------------------------------------------------------------------
def _m2s2l(preset: str = "paper", ablation: str | None = None, **kw) -> nn.Module:
    from m2s2l_edge.models import create_model as create_m2s2l

    return create_m2s2l(preset, ablation=ablation, **kw)


register("m2s2l", "ours", "M²S²L (presets paper / small / tiny; ablation M1–M4)", "this repository")(_m2s2l)
for _abl in ("M1", "M2", "M3", "M4"):
    register(f"m2s2l-{_abl}", "ours", f"M²S²L paper preset, ablation {_abl}", "this repository")(
        lambda _a=_abl, **kw: _m2s2l(ablation=_a, **kw)
    )

# -- peers ------------------------------------------------------------------------------------------------------
_PEERS = (
    ("mnad", "baselines.mnad", "MNAD", "MNAD (prediction), 4 RGB frames at 256²", "github.com/cvlab-yonsei/MNAD"),
    ("ffp", "baselines.ffp", "FFPGenerator", "FFP U-Net generator, 4 RGB frames at 256²",
     "github.com/StevenLiuWen/ano_pred_cvpr2018"),
    ("ffp-discriminator", "baselines.ffp", "PatchDiscriminator", "FFP's pix2pix discriminator (training only)",
     "github.com/StevenLiuWen/ano_pred_cvpr2018"),
    ("memae", "baselines.memae", "MemAE", "MemAE 3-D conv AE, 16 grey frames at 256²",
     "github.com/donggong1/memae-anomaly-detection"),
    ("conv-ae", "baselines.conv_ae", "ConvAE", "Conv-AE, 10 grey frames at 227²", "Hasan et al., CVPR 2016, Table 1"),
    ("convlstm-ae", "baselines.convlstm_ae", "ConvLSTMAE", "ConvLSTM-AE, 10 grey frames at 225²",
     "github.com/zachluo/convlstm_anomaly_detection"),
    ("std", "baselines.std", "STD", "STD appearance + motion AEs with clustering, 5 RGB frames at 256²",
     "github.com/ChangYunPeng/VideoAnomalyDetection"),
    ("ammc", "baselines.ammc", "AMMCNet", "AMMC-Net two-stream U-Net, 4 RGB frames + 3 precomputed flows at 256²",
     "github.com/NjuHaoZhang/AMMCNet_AAAI2021"),
    ("ammc-flow", "baselines.ammc", "AMMCNetWithFlow", "AMMC-Net with FlowNet2-SD computing its 3 flows",
     "github.com/NjuHaoZhang/AMMCNet_AAAI2021"),
    ("vadmamba", "baselines.vadmamba", "VADMamba", "VADMamba prediction + flow VM-UNets (+ FlowNet2-SD), 16 frames",
     "github.com/jLooo/VADMamba"),
    ("flownet2-sd", "baselines.flownet", "FlowNet2SD", "FlowNet2-SD optical flow (used by FFP, AMMC-Net, VADMamba)",
     "github.com/NVIDIA/flownet2-pytorch sizes, as vendored by the peers"),
)
for _name, _module, _attr, _summary, _source in _PEERS:
    register(_name, "component" if _name in ("ffp-discriminator", "flownet2-sd") else "peer", _summary, _source)(
        _lazy(_module, _attr)
    )
