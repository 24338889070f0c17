"""Selective scan (Mamba's S6 recurrence): the reference specification and the fast PyTorch path.

Semantics are those of mamba-ssm's ``selective_scan_fn`` (docs/DESIGN.md §4). For batch b, channel d of K·D channels
(group k = d // D), state n:

    dt_t = softplus(delta_t + delta_bias)   if delta_softplus else delta_t + delta_bias
    h_t  = exp(dt_t · A[d, n]) · h_{t-1} + dt_t · B[b, k, n, t] · u_t        (h_0 = 0)
    y_t  = Σ_n C[b, k, n, t] · h_t[n] + D[d] · u_t
    y_t  = y_t · silu(z_t)                  if z is given

Shapes:
    u, delta, z:     (B, KD, L)
    A:               (KD, N)        real, negative (A = -exp(A_log))
    B, C:            (B, K, N, L)   K = 1 for the temporal blocks, K = 4 for SS2D
    D, delta_bias:   (KD,)
    y:               (B, KD, L), dtype of u
    last_state:      (B, KD, N), float32 (float64 for float64 inputs)

Both paths compute in float32 (float64 when given float64) whatever the input dtype, as the CUDA kernels do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def check_scan_inputs(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
) -> tuple[int, int, int, int, int]:
    """Validate shapes against the contract; returns (batch, KD, L, K, N). Raises ValueError naming the dimension."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (B, KD, L), got {tuple(u.shape)}")
    batch, kd, length = u.shape
    if tuple(delta.shape) != (batch, kd, length):
        raise ValueError(f"selective_scan: delta must match u's shape {(batch, kd, length)}, got {tuple(delta.shape)}")
    if A.dim() != 2 or A.shape[0] != kd:
        raise ValueError(f"selective_scan: A must be (KD={kd}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    if B.dim() != 4 or B.shape[0] != batch or B.shape[2] != n or B.shape[3] != length:
        raise ValueError(f"selective_scan: B must be (B={batch}, K, N={n}, L={length}), got {tuple(B.shape)}")
    k = B.shape[1]
    if k < 1 or kd % k != 0:
        raise ValueError(f"selective_scan: the number of groups K={k} must divide KD={kd}")
    if tuple(C.shape) != tuple(B.shape):
        raise ValueError(f"selective_scan: C must have B's shape {tuple(B.shape)}, got {tuple(C.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (kd,):
            raise ValueError(f"selective_scan: {name} must be (KD={kd},), got {tuple(t.shape)}")
    if z is not None and tuple(z.shape) != (batch, kd, length):
        raise ValueError(f"selective_scan: z must match u's shape {(batch, kd, length)}, got {tuple(z.shape)}")
    if not u.is_floating_point():
        raise ValueError(f"selective_scan: u must be a floating-point tensor, got {u.dtype}")
    return batch, kd, length, k, n


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _discretize_dt(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype: torch.dtype) -> Tensor:
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    return dt


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """Skip term, optional SiLU gate, cast back to u's dtype."""
    if D is not None:
        y = y + u.to(y.dtype) * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(u.dtype)


def selective_scan_ref(
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
) -> Tensor | tuple[Tensor, Tensor]:
    """The specification: a plain sequential recurrence over L. Slow; used to check every other implementation."""
    batch, kd, length, k, n = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype = _compute_dtype(u)
    dt = _discretize_dt(delta, delta_bias, delta_softplus, dtype)  # (B, KD, L)
    A_ = A.to(dtype)
    # Expand the K groups of B/C to the KD channels they serve: channel d uses group d // (KD / K).
    B_ = B.to(dtype).repeat_interleave(kd // k, dim=1)  # (B, KD, N, L)
    C_ = C.to(dtype).repeat_interleave(kd // k, dim=1)  # (B, KD, N, L)
    u_ = u.to(dtype)
    h = u_.new_zeros(batch, kd, n)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, :, t, None] * A_) * h + (dt[:, :, t] * u_[:, :, t])[:, :, None] * B_[:, :, :, t]
        ys.append((h * C_[:, :, :, t]).sum(-1))  # (B, KD)
    y = torch.stack(ys, dim=-1)  # (B, KD, L)
    out = _finish(y, u, D, z)
    return (out, h) if return_last_state else out


class _LinearRecurrence(torch.autograd.Function):
    """h_t = a_t · h_{t-1} + x_t over the leading (time) dimension, h_0 = 0; returns every h_t.

    Time-major contiguous layout makes each step one fused multiply-add over a contiguous (B·KD·N) slab; the
    backward pass is the same recurrence run in reverse: g_t = gh_t + a_{t+1} · g_{t+1}, dx_t = g_t,
    da_t = g_t · h_{t-1}.
    """

    @staticmethod
    def forward(ctx, a: Tensor, x: Tensor) -> Tensor:
        h = _recurrence(a, x.clone())
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, gh: Tensor) -> tuple[Tensor, Tensor]:
        a, h = ctx.saved_tensors
        g = gh.contiguous().clone()
        for t in range(g.shape[0] - 2, -1, -1):
            g[t].addcmul_(a[t + 1], g[t + 1])
        ga = torch.zeros_like(a)
        ga[1:] = g[1:] * h[:-1]
        return ga, g


def _recurrence(a: Tensor, h: Tensor, h0: Tensor | None = None) -> Tensor:
    """In place over ``h`` (holding x on entry): h[t] += a[t] * h[t-1], with h[-1] = h0 (zero when None)."""
    if h0 is not None:
        h[0].addcmul_(a[0], h0)
    for t in range(1, h.shape[0]):
        h[t].addcmul_(a[t], h[t - 1])
    return h


# Time steps per chunk when no gradient is needed: bounds the (chunk, B, KD, N) temporaries to a few MB per batch
# item at the paper preset's widths, so inference memory does not grow with L and the slabs stay in cache.
_INFERENCE_CHUNK = 64


def selective_scan_torch(
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
) -> Tensor | tuple[Tensor, Tensor]:
    """Fast PyTorch path (CPU training and inference; any device): same contract as ``selective_scan_ref``.

    Speed comes from layout, not from a different formula: the per-step work is precomputed in one vectorised
    pass in a time-major layout (L, B, K, D, N), so the sequential part is one contiguous fused multiply-add per
    step, and the C-contraction is one batched matmul. Numerically it is the reference recurrence (exp(dt·A) ≤ 1,
    no division, no cumulative-product tricks), so large steps cannot overflow.
    """
    batch, kd, length, k, n = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype = _compute_dtype(u)
    dg = kd // k
    dt = _discretize_dt(delta, delta_bias, delta_softplus, dtype)  # (B, KD, L)
    u_ = u.to(dtype)
    A_ = A.to(dtype).view(k, dg, n)  # (K, Dg, N)
    dt_t = dt.view(batch, k, dg, length).permute(3, 0, 1, 2)  # (L, B, K, Dg)
    dtu_t = (dt * u_).view(batch, k, dg, length).permute(3, 0, 1, 2)  # (L, B, K, Dg)
    B_t = B.to(dtype).permute(3, 0, 1, 2).unsqueeze(3)  # (L, B, K, 1, N)
    C_t = C.to(dtype).permute(3, 0, 1, 2).unsqueeze(-1)  # (L, B, K, N, 1)

    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, delta_bias)
    )
    if needs_grad:
        dA = torch.exp(dt_t.unsqueeze(-1) * A_)  # (L, B, K, Dg, N)
        dBu = dtu_t.unsqueeze(-1) * B_t  # (L, B, K, Dg, N)
        h = _LinearRecurrence.apply(dA.contiguous(), dBu.contiguous())  # (L, B, K, Dg, N)
        y_t = torch.matmul(h, C_t).squeeze(-1)  # (L, B, K, Dg)
        last = h[-1]
    else:
        y_t = dt.new_empty(length, batch, k, dg)
        last = None
        for s in range(0, length, _INFERENCE_CHUNK):
            e = min(s + _INFERENCE_CHUNK, length)
            dA = torch.exp(dt_t[s:e].unsqueeze(-1) * A_)  # (c, B, K, Dg, N)
            h = dtu_t[s:e].unsqueeze(-1) * B_t[s:e]  # (c, B, K, Dg, N), contiguous
            _recurrence(dA, h, last)
            torch.matmul(h, C_t[s:e], out=y_t[s:e].unsqueeze(-1))
            last = h[-1]
    y = y_t.permute(1, 2, 3, 0).reshape(batch, kd, length)  # (B, KD, L)
    out = _finish(y, u, D, z)
    if return_last_state:
        return out, last.reshape(batch, kd, n)
    return out
