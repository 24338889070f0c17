"""``torch.ops.m2s2l.selective_scan``: the scan as one opaque PyTorch operator.

Why a custom operator: ``torch.export`` / ``torch.onnx.export`` and ``torch.compile`` see one node per scan call
instead of the unrolled recurrence, so the plugin-flavour ONNX gets exactly one ``SelectiveScan`` node per call.
The fake kernel gives shapes and dtypes without computing; autograd recomputes through the differentiable fast
path, which keeps the operator's forward free to use a forward-only kernel (CUDA) where one is available.

Importing this module registers the operator (idempotent per process, as torch.library requires).
"""

from __future__ import annotations

import torch

from m2s2l_edge.ops.selective_scan import check_scan_inputs

Tensor = torch.Tensor

OP_QUALNAME = "m2s2l::selective_scan"


def _forward_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus) -> Tensor:
    from m2s2l_edge.ops.kernels import KERNELS, auto_backend

    return KERNELS[auto_backend(u.device.type)](u, delta, A, B, C, D, z, delta_bias, delta_softplus)


@torch.library.custom_op(OP_QUALNAME, mutates_args=())
def selective_scan_op(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> Tensor:
    with torch.no_grad():
        return _forward_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus).contiguous()


@selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    return torch.empty_like(u, memory_format=torch.contiguous_format)


_TENSOR_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, delta_softplus = inputs
    ctx.delta_softplus = delta_softplus
    ctx.present = tuple(t is not None for t in (u, delta, A, B, C, D, z, delta_bias))
    ctx.save_for_backward(*(t for t in (u, delta, A, B, C, D, z, delta_bias) if t is not None))


def _backward(ctx, grad_y):
    from m2s2l_edge.ops.kernels import KERNELS, differentiable_backend

    saved = iter(ctx.saved_tensors)
    args = [next(saved).detach().requires_grad_(True) if p else None for p in ctx.present]
    backend = differentiable_backend(grad_y.device)
    with torch.enable_grad():
        y = KERNELS[backend](*args, delta_softplus=ctx.delta_softplus)
        wrt = [a for a in args if a is not None]
        grads = iter(torch.autograd.grad(y, wrt, grad_y, allow_unused=True))
    return (*[next(grads) if p else None for p in ctx.present], None)


selective_scan_op.register_autograd(_backward, setup_context=_setup_context)
