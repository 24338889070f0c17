"""Inference-time rewrites that keep the outputs and remove work: BatchNorm folded into the preceding convolution.

In eval mode a BatchNorm2d is a per-channel affine map, y = (x - mean) / sqrt(var + eps) * gamma + beta, so when it
directly follows a Conv2d or ConvTranspose2d it can be merged into that convolution's weight and bias. The model has
33 such pairs in the paper preset (skip pyramid, fusion, both decoders); folding them removes 33 kernel launches per
forward on a GPU, which matters at batch 1 where launches, not arithmetic, bound the frame rate. TensorRT and ONNX
Runtime fold these pairs themselves; this is for the PyTorch paths (``TorchBackend``, ``profile --fps``, the GPU
benchmark).
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
        # Read by save_checkpoint: a folded model no longer has the parameters a checkpoint must hold.
        model.folded_batchnorm = getattr(model, "folded_batchnorm", 0) + folded
    return folded
