"""Depth-wise causal 1-D convolution (optionally followed by SiLU) of the temporal Mamba blocks: one entry point,
explicit backends, a logged choice, no silent fallback (the selective scan's rules, see ``dispatch``).

Backends:
    torch          ``F.conv1d`` with K - 1 zeros on both sides, the last K - 1 outputs dropped: exactly what
                   ``nn.Conv1d(D, D, K, groups=D, padding=K - 1)`` followed by ``[..., :L]`` computes, so a traced or
                   exported model holds one standard Conv (and a Slice) per block; any device, differentiable
    causal_conv1d  ``causal_conv1d_fn`` of the causal-conv1d package (CUDA tensors, FP32 / FP16 / BF16, kernel widths
                   2-4, SiLU fused, with a backward); the fast path mamba-ssm's own Mamba block uses
    auto           CUDA tensors: causal_conv1d where it imports and supports the width, else torch; anything else
                   (CPU tensors, tracing, ONNX export): torch. Logged once.

An explicitly requested backend that is unavailable raises RuntimeError with the command that fixes it.

Shapes: x (B, D, L); weight (D, 1, K) as ``nn.Conv1d(D, D, K, groups=D)`` stores it (mamba-ssm's ``conv1d.weight``;
(D, K) is accepted too); bias (D,) or None. Output (B, D, L), x's dtype:

    y[b, d, t] = bias[d] + sum_{j < K} weight[d, 0, j] * x[b, d, t - (K - 1) + j]      (x at negative times = 0)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "causal_conv1d")
ACTIVATIONS = (None, "silu")
INSTALL = "pip install 'm2s2l-edge[mamba]' (or pip install causal-conv1d; needs CUDA and a CUDA build of PyTorch)"
# Kernel widths causal_conv1d_fn implements.
FAST_WIDTHS = (2, 3, 4)

Tensor = torch.Tensor


@functools.cache
def _causal_conv1d_fn() -> Callable | None:
    try:
        from causal_conv1d import causal_conv1d_fn
    except ImportError:
        return None
    return causal_conv1d_fn


def is_available() -> bool:
    """Whether the causal-conv1d package imports here (it still needs CUDA tensors)."""
    return _causal_conv1d_fn() is not None


def _torch(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None) -> Tensor:
    width = weight.shape[-1]
    y = F.conv1d(x, weight, bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]]  # (B, D, L)
    return F.silu(y) if activation == "silu" else y


def _fast(x: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None) -> Tensor:
    fn = _causal_conv1d_fn()
    if fn is None:
        raise RuntimeError(f"causal conv backend 'causal_conv1d' is not installed: {INSTALL}")
    if not x.is_cuda:
        raise RuntimeError("causal conv backend 'causal_conv1d' needs CUDA tensors; use backend='torch' on the CPU")
    width = weight.shape[-1]
    if width not in FAST_WIDTHS:
        raise ValueError(f"causal_conv1d_fn supports kernel widths {FAST_WIDTHS}, got {width}; use backend='torch'")
    return fn(x, weight.reshape(weight.shape[0], width), bias, activation=activation)


_IMPLS: dict[str, Callable] = {"torch": _torch, "causal_conv1d": _fast}


@functools.cache
def _log_choice(backend: str, device_type: str) -> None:
    logger.info("causal conv1d: backend=%s on %s", backend, device_type)


def _exporting() -> bool:
    """Tracing for export or compilation: the graph must hold the standard convolution, whatever the device."""
    is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)
    return torch.compiler.is_compiling() or is_exporting() or torch.jit.is_tracing()


def resolve_backend(backend: str, x: Tensor, width: int) -> str:
    """The concrete backend ``backend`` means for ``x`` and a kernel of ``width`` (``auto`` resolved; validated)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown causal conv backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if x.is_cuda and width in FAST_WIDTHS and not _exporting() and is_available():
        return "causal_conv1d"
    return "torch"


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    backend: str = "auto",
) -> Tensor:
    """Depth-wise causal convolution of ``x`` (B, D, L) with ``weight`` (D, 1, K), then ``activation`` (None or
    "silu"), on the chosen backend (see the module docstring). Returns (B, D, L) in x's dtype."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; valid: None, 'silu'")
    if x.dim() != 3:
        raise ValueError(f"causal_conv1d: x must be (B, D, L), got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if weight.dim() == 2:
        weight = weight.unsqueeze(1)  # (D, K) → (D, 1, K)
    if weight.dim() != 3 or weight.shape[:2] != (channels, 1):
        raise ValueError(f"causal_conv1d: weight must be (D={channels}, 1, K) or (D, K), got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"causal_conv1d: bias must be (D={channels},), got {tuple(bias.shape)}")
    name = resolve_backend(backend, x, weight.shape[-1])
    if not _exporting():
        _log_choice(name, x.device.type)
    return _IMPLS[name](x, weight, bias, activation)
