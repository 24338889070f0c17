"""The concrete selective-scan kernels and which of them suits a device; ``dispatch`` chooses among them.

Kept apart from ``dispatch`` so that the custom operator (``custom_op``), which ``dispatch`` offers as the ``op``
backend, can run a kernel without importing ``dispatch`` back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch

from m2s2l_edge.ops.selective_scan import selective_scan_ref, selective_scan_torch

logger = logging.getLogger(__name__)


@functools.cache
def _mamba_ssm_fn() -> Callable | None:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


def _mamba_ssm(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
    fn = _mamba_ssm_fn()
    if fn is None:
        raise RuntimeError("scan backend 'mamba_ssm' is not installed: pip install 'm2s2l-edge[mamba]' (needs CUDA)")
    if not u.is_cuda:
        raise RuntimeError("scan backend 'mamba_ssm' needs CUDA tensors; use backend='cpu' or 'torch' on the CPU")
    return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def _cpu(*args, **kwargs):
    from m2s2l_edge.ops import cpu_kernel

    if not cpu_kernel.is_available():
        raise RuntimeError(f"scan backend 'cpu' is unavailable: {cpu_kernel.unavailable_reason()}")
    return cpu_kernel.selective_scan_cpu(*args, **kwargs)


def _cuda(*args, **kwargs):
    from m2s2l_edge.ops import cuda_backend

    if not cuda_backend.is_available():
        raise RuntimeError(f"scan backend 'cuda' is unavailable: {cuda_backend.unavailable_reason()}")
    return cuda_backend.selective_scan_cuda(*args, **kwargs)


# Every concrete kernel by name, with selective_scan_ref's signature.
KERNELS: dict[str, Callable] = {
    "ref": selective_scan_ref,
    "torch": selective_scan_torch,
    "cpu": _cpu,
    "cuda": _cuda,
    "mamba_ssm": _mamba_ssm,
}


@functools.cache
def auto_backend(device_type: str) -> str:
    if device_type == "cuda":
        if _mamba_ssm_fn() is not None:
            return "mamba_ssm"
        from m2s2l_edge.ops import cuda_backend

        return "cuda" if cuda_backend.is_available() else "torch"
    if device_type == "cpu":
        from m2s2l_edge.ops import cpu_kernel

        if cpu_kernel.is_available():
            return "cpu"
        reason = cpu_kernel.unavailable_reason()
        logger.warning("selective scan: C++ CPU kernel unavailable (%s); using 'torch'", reason)
    return "torch"


def differentiable_backend(device: torch.device | str) -> str:
    """The fastest backend with a backward pass for tensors on ``device`` (the CUDA kernel is forward-only)."""
    device_type = torch.device(device).type
    name = auto_backend(device_type)
    return "torch" if name == "cuda" else name
