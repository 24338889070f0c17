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

import torch

from m2s2l_edge.ops import kernels

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "ref", "torch", "cpu", "cuda", "mamba_ssm", "op")

Tensor = torch.Tensor


def _op(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
    if return_last_state:
        raise ValueError("scan backend 'op' returns y only; use backend='torch' or 'cpu' for the last state")
    from m2s2l_edge.ops import custom_op  # noqa: F401  (registers torch.ops.m2s2l.selective_scan)

    return torch.ops.m2s2l.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


@functools.cache
def _log_choice(backend: str, device_type: str) -> None:
    logger.info("selective scan: backend=%s on %s", backend, device_type)


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The concrete backend ``backend`` means for tensors on ``device`` (``auto`` resolved; validated)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; valid: {', '.join(BACKENDS)}")
    device_type = torch.device(device).type
    return kernels.auto_backend(device_type) if backend == "auto" else backend


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
        name = kernels.differentiable_backend(u.device)
    else:
        name = resolve_backend(backend, u.device)
    if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
        _log_choice(name, u.device.type)
    impl = _op if name == "op" else kernels.KERNELS[name]
    return impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
