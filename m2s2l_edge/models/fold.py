"""Inference-time rewrites that keep the outputs and remove work (exact up to one rounding of merged weights).

- ``fold_batchnorm``: in eval mode a BatchNorm2d is a per-channel affine map, y = (x - mean) / sqrt(var + eps) *
  gamma + beta, so when it directly follows a Conv2d or ConvTranspose2d it merges into that convolution's weight and
  bias. The paper preset has 33 such pairs (skip pyramid, fusion, both decoders).
- ``merge_multiscale_convs``: each SS2D's parallel 3×3 / 5×5 / 7×7 depth-wise convolutions (MS-VSSB) become one
  7×7 depth-wise convolution with the zero-padded kernels summed (see ``SS2D.merge_ms_convs``).
- ``optimize_for_inference``: both, and the model is marked so that ``save_checkpoint`` refuses it.

On a GPU at batch 1 a forward is bound by kernel launches, not arithmetic; these remove 33 + 12 launches from the
paper preset's forward. TensorRT and ONNX Runtime fold BatchNorm themselves but do not merge the parallel
convolutions. Used by the PyTorch inference paths (``TorchBackend``, ``profile --fps``, the GPU benchmark).
"""

from __future__ import annotations

import torch
from torch import nn

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _fold_pair(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics (track_running_stats=False)")
    out_channels = conv.out_channels
    if bn.num_features != out_channels:
        raise ValueError(f"BatchNorm2d has {bn.num_features} features after a conv with {out_channels} outputs")
    with torch.no_grad():
        # float64 for the fold itself: the result is then rounded once to the conv's dtype.
        var = bn.running_var.double()
        mean = bn.running_mean.double()
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
        beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
        scale = gamma / torch.sqrt(var + bn.eps)
        weight = conv.weight.double()
        if isinstance(conv, nn.ConvTranspose2d):
            # weight (in, out / groups, kh, kw): output channel o = g * (out / groups) + j.
            groups = conv.groups
            w = weight.view(groups, weight.shape[0] // groups, weight.shape[1], *weight.shape[2:])
            w = w * scale.view(groups, 1, out_channels // groups, 1, 1)
            weight = w.reshape(conv.weight.shape)
        else:
            weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(var)
        bias = (bias - mean) * scale + beta
        conv.weight.copy_(weight.to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(bias.to(device=conv.weight.device, dtype=conv.weight.dtype))
        else:
            conv.bias.copy_(bias.to(conv.bias.dtype))


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d/ConvTranspose2d inside an ``nn.Sequential`` into that
    convolution, in place; the BatchNorm becomes ``nn.Identity``. Returns how many were folded.

    Only pairs inside one Sequential are folded: there the conv output is known to feed the BatchNorm alone. The
    model must be in eval mode (a training-mode BatchNorm normalises with batch statistics, which cannot be folded);
    folding is then exact up to one FP rounding of the merged weights. Not reversible: fold a copy if the original
    is still needed for training or for saving a checkpoint.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call .eval() first)")
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for prev_name, name in zip(names, names[1:], strict=False):
            prev, mod = seq._modules[prev_name], seq._modules[name]
            if isinstance(prev, _CONVS) and type(mod) is nn.BatchNorm2d:
                if mod.training:
                    raise ValueError(f"BatchNorm2d {name!r} is in training mode; call .eval() on the whole model")
                _fold_pair(prev, mod)
                seq._modules[name] = nn.Identity()
                folded += 1
    if folded:
        _mark(model, "folded_batchnorm", folded)
    return folded


def merge_multiscale_convs(model: nn.Module) -> int:
    """Merge the parallel depth-wise convolutions of every SS2D into one (``SS2D.merge_ms_convs``), in place.
    Returns how many SS2D layers were merged. Valid in train and eval mode alike (no statistics involved), but the
    result no longer loads a checkpoint of the original layout: use it for inference copies."""
    from m2s2l_edge.layers.ssm import SS2D

    merged = sum(1 for m in model.modules() if isinstance(m, SS2D) and m.merge_ms_convs())
    if merged:
        _mark(model, "merged_ms_convs", merged)
    return merged


def optimize_for_inference(model: nn.Module) -> dict[str, int]:
    """``fold_batchnorm`` and ``merge_multiscale_convs`` in place (eval mode required); returns their counts."""
    return {"folded_batchnorm": fold_batchnorm(model), "merged_ms_convs": merge_multiscale_convs(model)}


def inference_rewrites(model: nn.Module) -> dict[str, int]:
    """The rewrites applied to ``model`` so far ({} for an untouched model)."""
    return dict(getattr(model, "inference_rewrites", {}))


def _mark(model: nn.Module, name: str, count: int) -> None:
    # Read by save_checkpoint: a rewritten model no longer has the parameters a checkpoint must hold.
    rewrites = getattr(model, "inference_rewrites", {})
    model.inference_rewrites = {**rewrites, name: rewrites.get(name, 0) + count}
