"""Choose a selective-scan implementation: one entry point, explicit backends, a logged choice, no silent fallback.

Backends:
    ref        the sequential specification (slow; tests and debugging)
    torch      pure PyTorch, time-major layout; any device; differentiable
    cpu        our C++ CPU kernel (forward + backward), built with the system C++ compiler on first use
    cuda       our CUDA kernel (plugins/selective_scan) through its PyTorch binding; forward only
    mamba_ssm  mamba-ssm's selective_scan_fn (CUDA tensors; optional dependency)
    op         the ``m2s2l::selective_scan`` custom operator: traces and exports as one node per scan
    auto       CUDA tensors: mamba_ssm, else cuda (torch where a gradient is needed: cuda is forward-only),
               else torch; CPU tensors: cpu, else torch. Logged once.

An explicitly requested backend that is unavailable raises RuntimeError with the command that fixes it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch

from m2s2l_edge.ops.selective_scan import selective_scan_ref, selective_scan_torch

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "ref", "torch", "cpu", "cuda", "mamba_ssm", "op")

Tensor = torch.Tensor


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


def _op(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
    if return_last_state:
        raise ValueError("scan backend 'op' returns y only; use backend='torch' or 'cpu' for the last state")
    from m2s2l_edge.ops import custom_op  # noqa: F401  (registers torch.ops.m2s2l.selective_scan)

    return torch.ops.m2s2l.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


_IMPLS: dict[str, Callable] = {
    "ref": selective_scan_ref,
    "torch": selective_scan_torch,
    "cpu": _cpu,
    "cuda": _cuda,
    "mamba_ssm": _mamba_ssm,
    "op": _op,
}


@functools.cache
def _log_choice(backend: str, device_type: str) -> None:
    logger.info("selective scan: backend=%s on %s", backend, device_type)


@functools.cache
def _auto_backend(device_type: str) -> str:
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
    name = _auto_backend(device_type)
    return "torch" if name == "cuda" else name


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The concrete backend ``backend`` means for tensors on ``device`` (``auto`` resolved; validated)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; valid: {', '.join(BACKENDS)}")
    device_type = torch.device(device).type
    return _auto_backend(device_type) if backend == "auto" else backend


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with the contract of ``selective_scan_ref`` on the chosen backend (see module docstring)."""
    if backend == "auto" and _needs_grad(u, delta, A, B, C, D, z, delta_bias):
        # auto never hands a gradient to the forward-only kernel: a training step on a GPU without mamba-ssm runs
        # the differentiable torch path, inference (no_grad / inference_mode) the kernel.
        name = differentiable_backend(u.device)
    else:
        name = resolve_backend(backend, u.device)
    if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
        _log_choice(name, u.device.type)
    return _IMPLS[name](u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
