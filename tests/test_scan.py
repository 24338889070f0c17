"""Every selective-scan implementation against the sequential reference (the specification), in float64."""

from __future__ import annotations

import pytest
import torch

from m2s2l_edge.ops import BACKENDS, resolve_backend, selective_scan, selective_scan_ref
from m2s2l_edge.ops.kernels import differentiable_backend


def make_inputs(batch, kd, k, n, length, *, dtype=torch.float64, z=True, bias=True, d=True, seed=0, dt_scale=0.5):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return dict(
        u=r(batch, kd, length),
        delta=r(batch, kd, length) * dt_scale,
        A=-torch.rand(kd, n, generator=g, dtype=dtype) * 4 - 0.05,
        B=r(batch, k, n, length),
        C=r(batch, k, n, length),
        D=r(kd) if d else None,
        z=r(batch, kd, length) if z else None,
        delta_bias=r(kd) * 0.3 if bias else None,
    )


# Every backend that runs on CPU tensors. "cpu" is never left out: where no C++ compiler exists its tests skip with
# that reason (``require``); where the compiler exists but the build fails, they fail.
CPU_BACKENDS = ("torch", "op", "cpu")


def _no_compiler_reason() -> str | None:
    from m2s2l_edge.ops import cpu_kernel

    try:
        cpu_kernel.find_compiler()
    except cpu_kernel.KernelBuildError as e:
        return str(e)
    return None


def require(backend: str) -> None:
    """Skip a 'cpu' case only for a missing compiler; a failed build then fails in the dispatcher's RuntimeError."""
    if backend == "cpu" and (reason := _no_compiler_reason()):
        pytest.skip(f"C++ CPU kernel: {reason}")


SHAPES = [
    # (batch, KD, K, N, L)
    (1, 4, 1, 3, 1),
    (2, 8, 4, 5, 1),
    (2, 6, 1, 4, 7),
    (1, 16, 4, 8, 33),
    (3, 12, 4, 2, 17),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}_KD{}_K{}_N{}_L{}".format(*s))
@pytest.mark.parametrize("softplus", [False, True])
@pytest.mark.parametrize("with_z,with_bias", [(False, False), (True, True), (True, False)])
def test_backend_matches_reference(backend, shape, softplus, with_z, with_bias):
    require(backend)
    inputs = make_inputs(*shape, z=with_z, bias=with_bias, seed=hash((shape, softplus)) % 1000)
    ref = selective_scan_ref(**inputs, delta_softplus=softplus)
    out = selective_scan(**inputs, delta_softplus=softplus, backend=backend)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    err = (out - ref).abs().max().item()
    print(f"{backend} {shape}: max abs diff {err:.3e}")
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_last_state_matches_reference(backend):
    require(backend)
    inputs = make_inputs(2, 8, 4, 5, 13)
    y_ref, h_ref = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
    y, h = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend=backend)
    assert h.shape == (2, 8, 5)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_float32_against_float64_reference(backend):
    require(backend)
    inputs = make_inputs(2, 16, 4, 8, 64)
    ref = selective_scan_ref(**inputs, delta_softplus=True)
    out = selective_scan(**{k: v.float() if v is not None else None for k, v in inputs.items()},
                         delta_softplus=True, backend=backend)
    assert out.dtype == torch.float32
    rel = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    assert rel < 1e-5, rel


@pytest.mark.parametrize("backend", ("ref", *CPU_BACKENDS))
def test_a_zero_gives_cumulative_sum(backend):
    """With A = 0 the state never decays: h_t = Σ_{s≤t} dt_s·B_s·u_s, so y_t = C·cumsum(dt·B·u)."""
    inputs = make_inputs(2, 6, 2, 3, 11, z=False, bias=False, d=False)
    inputs["A"] = torch.zeros_like(inputs["A"])
    dt = inputs["delta"]
    Bx = inputs["B"].repeat_interleave(3, dim=1)  # (B, KD, N, L)
    Cx = inputs["C"].repeat_interleave(3, dim=1)
    expected = (Cx * torch.cumsum(Bx * (dt * inputs["u"])[:, :, None, :], dim=-1)).sum(2)
    require(backend)
    torch.testing.assert_close(selective_scan(**inputs, backend=backend), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ("ref", *CPU_BACKENDS))
def test_length_one_closed_form(backend):
    """L = 1: y = (C·B)·dt·u + D·u, gated by silu(z)."""
    inputs = make_inputs(2, 8, 4, 5, 1)
    dt = torch.nn.functional.softplus(inputs["delta"] + inputs["delta_bias"][:, None])
    cb = (inputs["C"] * inputs["B"]).sum(2).repeat_interleave(2, dim=1)  # (B, KD, 1)
    y = cb * dt * inputs["u"] + inputs["D"][:, None] * inputs["u"]
    expected = y * torch.nn.functional.silu(inputs["z"])
    require(backend)
    out = selective_scan(**inputs, delta_softplus=True, backend=backend)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_large_steps_stay_finite(backend):
    """Big Δ and |A| make exp(Δ·A) underflow to 0; no implementation may turn that into NaN or inf."""
    require(backend)
    inputs = {k: v.float() if v is not None else None for k, v in make_inputs(1, 8, 4, 4, 64).items()}
    inputs["delta"] = inputs["delta"].abs() * 200 + 50
    inputs["A"] = inputs["A"] * 40
    ref = selective_scan_ref(**{k: v.double() if v is not None else None for k, v in inputs.items()},
                             delta_softplus=True)
    out = selective_scan(**inputs, delta_softplus=True, backend=backend)
    assert torch.isfinite(ref).all() and torch.isfinite(out).all()
    assert ((out.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


@pytest.mark.parametrize("with_z", [False, True])
def test_custom_op_gradcheck(with_z):
    inputs = make_inputs(1, 4, 2, 3, 5, z=with_z)
    names = [k for k, v in inputs.items() if v is not None]
    leaves = [inputs[k].clone().requires_grad_(True) for k in names]

    def fn(*args):
        kw = dict(zip(names, args, strict=True))
        return selective_scan(**kw, delta_softplus=True, backend="op")

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


def test_custom_op_gradients_match_reference():
    inputs = make_inputs(2, 8, 4, 4, 9)
    grads = {}
    for backend in ("ref", "op", "torch"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        y = selective_scan(**leaves, delta_softplus=True, backend=backend)
        y.pow(2).sum().backward()
        grads[backend] = {k: v.grad for k, v in leaves.items()}
    for backend in ("op", "torch"):
        for k in inputs:
            torch.testing.assert_close(grads[backend][k], grads["ref"][k], rtol=1e-9, atol=1e-9, msg=k)


def test_custom_op_passes_opcheck():
    import m2s2l_edge.ops.custom_op  # noqa: F401

    inputs = make_inputs(2, 8, 4, 4, 6)
    args = (*inputs.values(), True)
    torch.library.opcheck(torch.ops.m2s2l.selective_scan.default, args)


def test_custom_op_traces_as_one_node():
    import m2s2l_edge.ops.custom_op  # noqa: F401

    class Two(torch.nn.Module):
        def forward(self, u, delta, A, B, C):
            y = selective_scan(u, delta, A, B, C, backend="op")
            return selective_scan(y, delta, A, B, C, backend="op")

    inputs = make_inputs(1, 4, 1, 2, 5, dtype=torch.float32)
    ep = torch.export.export(Two(), tuple(inputs[k] for k in ("u", "delta", "A", "B", "C")))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.m2s2l.selective_scan.default) == 2


def test_dispatcher_validates_and_explains():
    inputs = make_inputs(1, 4, 1, 2, 3)
    with pytest.raises(ValueError, match="unknown scan backend 'nope'; valid: auto"):
        selective_scan(**inputs, backend="nope")
    with pytest.raises(RuntimeError, match="mamba"):
        selective_scan(**inputs, backend="mamba_ssm")  # not installed here, or needs CUDA tensors
    bad = dict(inputs, B=inputs["B"][..., :2])
    with pytest.raises(ValueError, match=r"B must be \(B=1, K, N=2, L=3\)"):
        selective_scan(**bad, backend="torch")
    for name in BACKENDS:  # every advertised name is accepted (resolves without a ValueError)
        assert resolve_backend(name, "cpu") in BACKENDS
    # auto on the CPU means the C++ kernel wherever a compiler exists (a failed build is a failure, not 'torch'),
    # and that kernel has a backward, so training takes it too.
    expected = "torch" if _no_compiler_reason() else "cpu"
    assert resolve_backend("auto", "cpu") == expected
    assert differentiable_backend("cpu") == expected


def test_cuda_backend_requested_without_gpu_raises():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    inputs = make_inputs(1, 4, 1, 2, 3, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="cuda"):
        selective_scan(**inputs, backend="cuda")


def test_auto_logs_its_choice_once(caplog):
    from m2s2l_edge.ops import dispatch

    dispatch._log_choice.cache_clear()
    inputs = make_inputs(1, 4, 1, 2, 3)
    with caplog.at_level("INFO", logger="m2s2l_edge.ops.dispatch"):
        selective_scan(**inputs)
        selective_scan(**inputs)
    assert sum("selective scan: backend=" in r.message for r in caplog.records) == 1


def _mamba_ssm_ready() -> str | None:
    from m2s2l_edge.ops.kernels import _mamba_ssm_fn

    if not torch.cuda.is_available():
        return "needs a CUDA device"
    if _mamba_ssm_fn() is None:
        return "mamba-ssm is not installed (pip install 'm2s2l-edge[mamba]')"
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES[1:], ids=lambda s: "B{}_KD{}_K{}_N{}_L{}".format(*s))
def test_mamba_ssm_matches_reference(shape):
    reason = _mamba_ssm_ready()
    if reason:
        pytest.skip(reason)
    inputs = make_inputs(*shape, dtype=torch.float32)
    ref = selective_scan_ref(**{k: v.double() if v is not None else None for k, v in inputs.items()},
                             delta_softplus=True)
    out = selective_scan(**{k: v.cuda() if v is not None else None for k, v in inputs.items()},
                         delta_softplus=True, backend="mamba_ssm")
    assert ((out.double().cpu() - ref).abs().max() / ref.abs().max()).item() < 1e-5
