"""The temporal Mamba blocks' depth-wise causal convolution (``m2s2l_edge.ops.causal_conv``).

Every backend is checked against ``reference`` below, a plain loop over the definition (zeros before t = 0, one
weight per channel and tap, optional bias and SiLU), in float64 on the CPU: the PyTorch path always, causal-conv1d's
``causal_conv1d_fn`` on CUDA where it is installed (skipped with the reason otherwise), forward and gradients. The
ONNX export of the model keeps a standard Conv node per block.
"""

from __future__ import annotations

import pytest
import torch

from m2s2l_edge.config import get_preset, preset_names
from m2s2l_edge.ops import causal_conv
from m2s2l_edge.ops.causal_conv import causal_conv1d

# Every kernel width a preset uses, and the others causal_conv1d_fn implements.
WIDTHS = sorted({get_preset(name).d_conv for name in preset_names()} | set(causal_conv.FAST_WIDTHS))


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, silu: bool) -> torch.Tensor:
    """y[b, d, t] = bias[d] + Σ_j w[d, j] · x[b, d, t − (K − 1) + j], zero before t = 0; then SiLU. Loops on purpose."""
    batch, channels, length = x.shape
    width = weight.shape[-1]
    w = weight.reshape(channels, width)
    y = torch.zeros_like(x)
    for t in range(length):
        for j in range(width):
            s = t - (width - 1) + j
            if s >= 0:
                y[:, :, t] = y[:, :, t] + w[:, j] * x[:, :, s]
    if bias is not None:
        y = y + bias[None, :, None]
    return y * torch.sigmoid(y) if silu else y


def _inputs(width: int, with_bias: bool, dtype=torch.float64, device="cpu", batch=2, channels=6, length=11, seed=0):
    g = torch.Generator().manual_seed(seed + width)
    x = torch.randn(batch, channels, length, generator=g, dtype=torch.float64)
    weight = torch.randn(channels, 1, width, generator=g, dtype=torch.float64) / width
    bias = torch.randn(channels, generator=g, dtype=torch.float64) if with_bias else None
    to = {"dtype": dtype, "device": device}
    return x.to(**to), weight.to(**to), None if bias is None else bias.to(**to)


def test_widths_include_the_presets():
    assert get_preset("paper").d_conv in WIDTHS and len(WIDTHS) >= 3


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_torch_path_matches_reference(width, with_bias, activation):
    x, weight, bias = _inputs(width, with_bias)
    want = reference(x, weight, bias, activation == "silu")
    got = causal_conv1d(x, weight, bias, activation, backend="torch")
    assert got.shape == x.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # Causality: changing the future never changes the past.
    x2 = x.clone()
    x2[..., 7:] += 1.0
    torch.testing.assert_close(causal_conv1d(x2, weight, bias, activation, backend="torch")[..., :7], got[..., :7])
    # (D, K) weights are the same weights.
    torch.testing.assert_close(causal_conv1d(x, weight[:, 0], bias, activation, backend="torch"), got)


@pytest.mark.parametrize("width", WIDTHS)
def test_torch_path_gradients_match_reference(width):
    x, weight, bias = _inputs(width, True, length=9)
    grads = []
    for fn in (lambda *a: reference(*a, True), lambda *a: causal_conv1d(*a, "silu", backend="torch")):
        leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
        fn(*leaves).pow(2).sum().backward()
        grads.append([t.grad for t in leaves])
    for name, got, want in zip(("x", "weight", "bias"), grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=name)


def test_mamba_mixer_uses_mamba_ssm_layout_and_the_dispatcher(monkeypatch):
    """conv1d.weight (d_inner, 1, d_conv) and conv1d.bias (d_inner,), as mamba-ssm names them; the mixer's
    convolution is the dispatcher's (a different backend name reaches it)."""
    from m2s2l_edge.layers.ssm import MambaMixer

    mixer = MambaMixer(16, d_conv=4)
    state = mixer.state_dict()
    assert state["conv1d.weight"].shape == (32, 1, 4) and state["conv1d.bias"].shape == (32,)
    seen = []
    real = causal_conv._IMPLS["torch"]

    def spy(x, weight, bias, activation):
        seen.append((tuple(x.shape), weight is mixer.conv1d.weight, bias is mixer.conv1d.bias, activation))
        return real(x, weight, bias, activation)

    monkeypatch.setitem(causal_conv._IMPLS, "torch", spy)
    x = torch.randn(2, 10, 16)
    y = mixer(x)
    assert seen == [((2, 32, 10), True, True, "silu")] and y.shape == (2, 10, 16)
    mixer.conv_backend = "nope"
    with pytest.raises(ValueError, match="unknown causal conv backend 'nope'; valid: auto, torch, causal_conv1d"):
        mixer(x)


def test_auto_on_the_cpu_is_torch_and_logs_once(caplog):
    causal_conv._log_choice.cache_clear()
    x, weight, bias = _inputs(4, True, dtype=torch.float32)
    assert causal_conv.resolve_backend("auto", x, 4) == "torch"
    with caplog.at_level("INFO", logger="m2s2l_edge.ops.causal_conv"):
        causal_conv1d(x, weight, bias, "silu")
        causal_conv1d(x, weight, bias, "silu")
    messages = [r.message for r in caplog.records if "causal conv1d" in r.message]
    assert messages == ["causal conv1d: backend=torch on cpu"]


def test_explicit_fast_path_raises_instead_of_falling_back():
    x, weight, bias = _inputs(4, True, dtype=torch.float32)
    if causal_conv.is_available():
        match = "needs CUDA tensors"  # installed: CPU tensors are the error
    else:
        match = r"not installed: pip install 'm2s2l-edge\[mamba\]'"
    with pytest.raises(RuntimeError, match=match):
        causal_conv1d(x, weight, bias, "silu", backend="causal_conv1d")


def test_bad_arguments_say_what_is_allowed():
    x, weight, bias = _inputs(4, True)
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        causal_conv1d(x, weight, bias, "relu")
    with pytest.raises(ValueError, match=r"weight must be \(D=6, 1, K\)"):
        causal_conv1d(x, weight[:3], bias)
    with pytest.raises(ValueError, match=r"bias must be \(D=6,\)"):
        causal_conv1d(x, weight, bias[:2])
    with pytest.raises(ValueError, match=r"x must be \(B, D, L\)"):
        causal_conv1d(x[0], weight, bias)


def test_onnx_export_keeps_a_standard_conv_per_temporal_block(exports):
    """The plugin-flavour ONNX of the tiny preset: one 1-D depth-wise Conv of width d_conv per temporal Mamba block,
    padded K − 1 on both sides (the causal Slice follows), and no node outside the standard and SelectiveScan
    domains."""
    onnx = pytest.importorskip("onnx")
    from m2s2l_edge.ops import spec

    model = onnx.load(str(exports["plugin"]))
    cfg = get_preset("tiny")
    convs = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if list(attrs.get("kernel_shape", [])) == [cfg.d_conv]:
            convs.append(attrs)
    assert len(convs) == len(cfg.active_windows), convs
    d_inner = cfg.expand * cfg.dim
    for attrs in convs:
        assert attrs["group"] == d_inner and list(attrs["pads"]) == [cfg.d_conv - 1, cfg.d_conv - 1]
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx", spec.ONNX_DOMAIN}


def _fast_path_ready() -> str | None:
    if not torch.cuda.is_available():
        return "needs a CUDA device"
    if not causal_conv.is_available():
        return f"causal-conv1d is not installed ({causal_conv.INSTALL})"
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("width", causal_conv.FAST_WIDTHS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_causal_conv1d_fn_matches_reference_with_gradients(width, with_bias, activation, dtype):
    reason = _fast_path_ready()
    if reason:
        pytest.skip(reason)
    x, weight, bias = _inputs(width, with_bias, channels=64, length=300)
    want_leaves = [None if t is None else t.clone().requires_grad_(True) for t in (x, weight, bias)]
    want = reference(*want_leaves, activation == "silu")
    got_leaves = [None if t is None else t.to("cuda", dtype).requires_grad_(True) for t in (x, weight, bias)]
    assert causal_conv.resolve_backend("auto", got_leaves[0], width) == "causal_conv1d"
    got = causal_conv1d(*got_leaves, activation, backend="causal_conv1d")
    assert got.dtype == dtype and got.is_cuda
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    scale = want.abs().max().item()
    assert (got.double().cpu() - want).abs().max().item() <= tol * scale
    grad_out = torch.randn(want.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    want.backward(grad_out)
    got.backward(grad_out.to("cuda", dtype))
    for name, g, w in zip(("x", "weight", "bias"), got_leaves, want_leaves, strict=True):
        if w is None:
            continue
        err = (g.grad.double().cpu() - w.grad).abs().max().item()
        assert err <= tol * w.grad.abs().max().item() * 4, f"{name}: {err:.3e}"


@pytest.mark.gpu
def test_auto_on_cuda_agrees_with_the_torch_path():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x, weight, bias = _inputs(4, True, dtype=torch.float32, device="cuda", channels=64, length=200)
    auto = causal_conv1d(x, weight, bias, "silu")
    plain = causal_conv1d(x, weight, bias, "silu", backend="torch")
    assert (auto - plain).abs().max().item() <= 1e-5 * plain.abs().max().item()
