"""The C++ CPU selective scan (m2s2l_edge.ops.cpu_kernel) against the specification, selective_scan_ref in float64.

Covers both kernels inside the library: the AVX2 one (float32 with N = 8, 16, 32) and the portable one (float64,
and float32 with any other N), step counts that are not multiples of the AVX2 kernel's groups of 8 and 32, every
optional input, gradients of every input, half-precision inputs, large steps, threads and bad inputs.
Run with -s to see the max abs / rel differences.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from m2s2l_edge.ops import cpu_kernel
from m2s2l_edge.ops.selective_scan import selective_scan_ref


def _no_compiler_reason() -> str:
    try:
        cpu_kernel.find_compiler()
    except cpu_kernel.KernelBuildError as e:
        return str(e)
    return ""


# Only a missing compiler skips: a compiler that fails on our source is a bug and must fail the tests.
needs_compiler = pytest.mark.skipif(bool(_no_compiler_reason()), reason=_no_compiler_reason() or "compiler found")

# (rtol, atol) against the float64 reference; atol is relative to the largest reference magnitude of the tensor.
TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (2e-3, 2e-3),  # the output is rounded to float16
    torch.bfloat16: (1e-2, 1e-2),
}

INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _inputs(
    batch: int,
    kd: int,
    k: int,
    n: int,
    length: int,
    *,
    has_D: bool = True,
    has_z: bool = True,
    has_bias: bool = True,
    seed: int = 0,
) -> dict[str, torch.Tensor | None]:
    """Float64 inputs in the ranges mamba-ssm's tests use (dt around 0.5, A in (-1.5, -0.5))."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    return {
        "u": randn(batch, kd, length),
        "delta": 0.5 * rand(batch, kd, length),
        "A": -(0.5 + rand(kd, n)),
        "B": randn(batch, k, n, length),
        "C": randn(batch, k, n, length),
        "D": randn(kd) if has_D else None,
        "z": randn(batch, kd, length) if has_z else None,
        "delta_bias": 0.5 * rand(kd) if has_bias else None,
    }


def _cast(inputs: dict, dtype: torch.dtype, requires_grad: bool = False) -> dict:
    out = {}
    for name, t in inputs.items():
        out[name] = None if t is None else t.detach().to(dtype).clone().requires_grad_(requires_grad)
    return out


def _assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    rtol, atol = TOLERANCES[dtype]
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    diff = (a - e).abs()
    scale = e.abs().max().item() if e.numel() else 0.0
    max_abs = diff.max().item() if diff.numel() else 0.0
    max_rel = max_abs / scale if scale else max_abs
    print(f"{name}: max abs diff {max_abs:.3g}, max diff / max |ref| {max_rel:.3g}")
    bound = atol * max(scale, 1e-30) + rtol * e.abs()
    bad = ~(diff <= bound)  # also catches NaN
    assert not bad.any(), f"{name}: {int(bad.sum())} of {a.numel()} elements differ (max abs diff {max_abs:.3g})"


# (batch, KD, K, N, L): AVX2 kernel (N = 8, 16, 32 in float32), portable kernel (float64, and N = 5, 1), one step,
# lengths shorter than a group of 8, and lengths leaving partial groups of 8 and of 32.
SHAPES = [
    (1, 8, 1, 16, 1),
    (2, 8, 4, 16, 7),
    (1, 12, 4, 16, 33),
    (2, 6, 1, 8, 40),
    (1, 8, 2, 32, 17),
    (2, 6, 3, 5, 33),
    (1, 4, 1, 1, 9),
    (1, 8, 4, 16, 100),
]
OPTIONS = [  # has_D, has_z, has_bias, delta_softplus
    (True, True, True, True),
    (False, False, False, False),
    (True, False, True, False),
    (False, True, False, True),
]


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}_KD{}_K{}_N{}_L{}".format(*s))
@pytest.mark.parametrize("has_D,has_z,has_bias,softplus", OPTIONS)
def test_forward_matches_reference(shape, dtype, has_D, has_z, has_bias, softplus):
    inputs = _inputs(*shape, has_D=has_D, has_z=has_z, has_bias=has_bias)
    y_ref, last_ref = selective_scan_ref(**inputs, delta_softplus=softplus, return_last_state=True)
    y, last = cpu_kernel.selective_scan_cpu(**_cast(inputs, dtype), delta_softplus=softplus, return_last_state=True)
    assert y.dtype == dtype and last.dtype == dtype
    _assert_close("y", y, y_ref, dtype)
    _assert_close("last_state", last, last_ref, dtype)


def _check_gradients(inputs: dict, dtype: torch.dtype, softplus: bool, seed: int = 1) -> None:
    ref_in = _cast(inputs, torch.float64, requires_grad=True)
    our_in = _cast(inputs, dtype, requires_grad=True)
    y_ref, last_ref = selective_scan_ref(**ref_in, delta_softplus=softplus, return_last_state=True)
    y, last = cpu_kernel.selective_scan_cpu(**our_in, delta_softplus=softplus, return_last_state=True)
    g = torch.Generator().manual_seed(seed)
    dy = torch.randn(y_ref.shape, generator=g, dtype=torch.float64)
    dlast = torch.randn(last_ref.shape, generator=g, dtype=torch.float64)
    ((y_ref * dy).sum() + (last_ref * dlast).sum()).backward()
    ((y * dy.to(y.dtype)).sum() + (last * dlast.to(last.dtype)).sum()).backward()
    for name in INPUT_NAMES:
        if ref_in[name] is None:
            continue
        assert our_in[name].grad is not None, f"no gradient for {name}"
        assert our_in[name].grad.dtype == dtype
        _assert_close(f"d{name}", our_in[name].grad, ref_in[name].grad, dtype)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}_KD{}_K{}_N{}_L{}".format(*s))
@pytest.mark.parametrize("has_D,has_z,has_bias,softplus", OPTIONS)
def test_gradients_match_reference_autograd(shape, dtype, has_D, has_z, has_bias, softplus):
    _check_gradients(_inputs(*shape, has_D=has_D, has_z=has_z, has_bias=has_bias, seed=2), dtype, softplus)


@needs_compiler
@pytest.mark.parametrize("n,length", [(3, 5), (16, 9)])
@pytest.mark.parametrize("softplus", [True, False])
def test_gradcheck(n, length, softplus):
    inputs = _cast(_inputs(2, 4, 2, n, length, seed=3), torch.float64, requires_grad=True)
    args = tuple(inputs[name] for name in INPUT_NAMES)

    def fn(*tensors):
        return cpu_kernel.selective_scan_cpu(*tensors, delta_softplus=softplus, return_last_state=True)

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6, rtol=1e-5)


@needs_compiler
@pytest.mark.parametrize("softplus", [True, False])
def test_wide_range_of_steps(softplus):
    # delta + bias over [-30, 30]: both sides of softplus's threshold, exp(-|x|) from 1 down to 1e-13, and (without
    # softplus) negative steps, where exp(dt A) > 1.
    inputs = _inputs(2, 8, 4, 16, 45, seed=10)
    inputs["delta"] = torch.linspace(-30, 30, inputs["delta"].numel(), dtype=torch.float64).view_as(inputs["delta"])
    if not softplus:
        inputs["delta"] = inputs["delta"] / 60.0  # keep exp(dt A) h bounded
    for dtype in (torch.float64, torch.float32):
        y_ref, last_ref = selective_scan_ref(**inputs, delta_softplus=softplus, return_last_state=True)
        y, last = cpu_kernel.selective_scan_cpu(**_cast(inputs, dtype), delta_softplus=softplus, return_last_state=True)
        _assert_close("y", y, y_ref, dtype)
        _assert_close("last_state", last, last_ref, dtype)
        _check_gradients(inputs, dtype, softplus)


@needs_compiler
@pytest.mark.slow
def test_portable_kernel(tmp_path: Path, monkeypatch):
    # CPUs without AVX2 (a Jetson's ARM cores) run the portable kernel for every shape; build it alone and check
    # it at N = 16 in float32, which on this machine would otherwise always take the AVX2 kernel.
    path = tmp_path / "scan_cpu_portable.so"
    cpu_kernel._compile(cpu_kernel.find_compiler(), path, ("-DM2S2L_SCAN_PORTABLE_ONLY",))
    portable = cpu_kernel._Library(cpu_kernel._load(path), "")
    monkeypatch.setattr(cpu_kernel, "_library", lambda: portable)
    for shape in [(2, 8, 4, 16, 33), (1, 8, 1, 8, 7)]:
        inputs = _inputs(*shape, seed=11)
        y_ref, last_ref = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
        y, last = cpu_kernel.selective_scan_cpu(
            **_cast(inputs, torch.float32), delta_softplus=True, return_last_state=True
        )
        _assert_close("y", y, y_ref, torch.float32)
        _assert_close("last_state", last, last_ref, torch.float32)
        _check_gradients(inputs, torch.float32, softplus=True)


@needs_compiler
def test_gradient_of_last_state_alone():
    inputs = _inputs(2, 8, 4, 16, 20, seed=4)
    ref_in = _cast(inputs, torch.float64, requires_grad=True)
    our_in = _cast(inputs, torch.float64, requires_grad=True)
    selective_scan_ref(**ref_in, delta_softplus=True, return_last_state=True)[1].sum().backward()
    cpu_kernel.selective_scan_cpu(**our_in, delta_softplus=True, return_last_state=True)[1].sum().backward()
    for name in INPUT_NAMES:
        # The last state does not depend on C, D or z: autograd leaves the reference's gradient as None.
        expected = ref_in[name].grad if ref_in[name].grad is not None else torch.zeros_like(ref_in[name])
        _assert_close(f"d{name}", our_in[name].grad, expected, torch.float64)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_inputs(dtype):
    inputs = _cast(_inputs(2, 8, 4, 16, 19, seed=5), dtype)
    # The reference on the same (rounded) inputs, in float64.
    y_ref, last_ref = selective_scan_ref(**_cast(inputs, torch.float64), delta_softplus=True, return_last_state=True)
    y, last = cpu_kernel.selective_scan_cpu(**inputs, delta_softplus=True, return_last_state=True)
    assert y.dtype == dtype and last.dtype == torch.float32  # the state is kept in float32, as the reference does
    _assert_close("y", y, y_ref, dtype)
    _assert_close("last_state", last, last_ref, torch.float32)
    grads_in = _cast(inputs, dtype, requires_grad=True)
    cpu_kernel.selective_scan_cpu(**grads_in, delta_softplus=True).float().sum().backward()
    for name in INPUT_NAMES:
        assert grads_in[name].grad.dtype == dtype and torch.isfinite(grads_in[name].grad.float()).all()


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("softplus", [True, False])
def test_large_steps_stay_finite(dtype, softplus):
    # dt ~ 50 and A ~ -16: exp(dt A) ~ exp(-800) underflows to exactly 0, which must not turn into NaN or inf.
    inputs = _inputs(1, 8, 4, 16, 37, seed=6)
    inputs["delta"] = 50.0 + 5.0 * inputs["delta"]
    inputs["A"] = -16.0 * (1.0 + torch.rand(inputs["A"].shape, dtype=torch.float64))
    y_ref, last_ref = selective_scan_ref(**inputs, delta_softplus=softplus, return_last_state=True)
    assert torch.isfinite(y_ref).all() and torch.isfinite(last_ref).all()
    y, last = cpu_kernel.selective_scan_cpu(**_cast(inputs, dtype), delta_softplus=softplus, return_last_state=True)
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    _assert_close("y", y, y_ref, dtype)
    _check_gradients(inputs, dtype, softplus)


@needs_compiler
def test_nan_propagates():
    inputs = _cast(_inputs(1, 8, 1, 16, 12, seed=7), torch.float32)
    inputs["delta"][0, 3, 5] = float("nan")
    y = cpu_kernel.selective_scan_cpu(**inputs, delta_softplus=True)
    assert torch.isnan(y[0, 3, 5:]).all()  # the NaN state poisons the rest of that channel only
    assert torch.isfinite(y[0, 3, :5]).all() and torch.isfinite(y[0, [0, 1, 2, 4, 5, 6, 7]]).all()


@needs_compiler
def test_non_contiguous_inputs():
    inputs = _inputs(2, 8, 4, 16, 24, seed=8)
    expected = cpu_kernel.selective_scan_cpu(**inputs, delta_softplus=True)
    strided = {}
    for name, t in inputs.items():
        # The same values seen through a transposed copy: same shape, different strides.
        strided[name] = t.transpose(0, -1).contiguous().transpose(0, -1) if t.dim() > 1 else t[None].expand(2, -1)[1]
        assert strided[name].dim() == 1 or not strided[name].is_contiguous()
    torch.testing.assert_close(cpu_kernel.selective_scan_cpu(**strided, delta_softplus=True), expected)


@needs_compiler
def test_results_do_not_depend_on_threads():
    # Large enough (B * KD * L * N >= 2 * 2^16) for the binding to use two threads when allowed to.
    inputs = _cast(_inputs(2, 64, 4, 16, 67, seed=9), torch.float32, requires_grad=True)
    saved = torch.get_num_threads()
    try:
        outputs, grads = {}, {}
        for threads in (1, 2, 2):
            torch.set_num_threads(threads)
            for t in inputs.values():
                t.grad = None
            y, last = cpu_kernel.selective_scan_cpu(**inputs, delta_softplus=True, return_last_state=True)
            (y.sum() + last.sum()).backward()
            outputs.setdefault(threads, []).append(torch.cat([y.flatten(), last.flatten()]).detach())
            grads.setdefault(threads, []).append([inputs[name].grad.clone() for name in INPUT_NAMES])
        # Channels are independent, and dB / dC are summed over fixed blocks of channels in a fixed order: bitwise
        # the same results for any thread count and any scheduling.
        reference_out, reference_grads = outputs[1][0], grads[1][0]
        for out, grad in zip(outputs[2], grads[2], strict=True):
            assert torch.equal(out, reference_out)
            for name, a, b in zip(INPUT_NAMES, grad, reference_grads, strict=True):
                assert torch.equal(a, b), f"d{name} depends on the thread count or the run"
    finally:
        torch.set_num_threads(saved)


@needs_compiler
def test_empty_batch():
    inputs = _inputs(0, 8, 4, 16, 5)
    y_ref, last_ref = selective_scan_ref(**inputs, return_last_state=True)
    y, last = cpu_kernel.selective_scan_cpu(**inputs, return_last_state=True)
    assert y.shape == y_ref.shape and last.shape == last_ref.shape


def _bad_inputs():
    ok = _inputs(1, 8, 4, 16, 5)
    meta = {name: t.to("meta") for name, t in ok.items()}
    return [
        ("u must be (B, KD, L)", {**ok, "u": ok["u"][0]}),
        ("A must be", {**ok, "A": ok["A"][:, :, None]}),
        ("must divide KD", {**ok, "B": ok["B"][:, :3], "C": ok["C"][:, :3]}),
        ("z must match", {**ok, "z": ok["z"][..., :4]}),
        ("CPU tensors only", meta),
        ("CPU tensors only", {**ok, "D": ok["D"].to("meta")}),
        ("floating-point", {**ok, "A": ok["A"].to(torch.int32)}),
        ("floating-point", {**ok, "u": ok["u"].to(torch.int64)}),
        ("state size N must be >= 1", {**ok, "A": ok["A"][:, :0], "B": ok["B"][:, :, :0], "C": ok["C"][:, :, :0]}),
    ]


@needs_compiler
@pytest.mark.parametrize("message,inputs", _bad_inputs(), ids=lambda x: x if isinstance(x, str) else "")
def test_bad_inputs_raise_value_error(message, inputs):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cpu_kernel.selective_scan_cpu(**inputs)


def test_unavailable_without_compiler(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(cpu_kernel.shutil, "which", lambda name: None)
    cpu_kernel._library.cache_clear()
    try:
        assert cpu_kernel.is_available() is False
        reason = cpu_kernel.unavailable_reason()
        assert "install g++" in reason and "\n" not in reason
        with pytest.raises(RuntimeError, match="unavailable"):
            cpu_kernel.selective_scan_cpu(**_inputs(1, 4, 1, 16, 3))
    finally:
        cpu_kernel._library.cache_clear()  # let later tests load the real library


@needs_compiler
@pytest.mark.slow
def test_concurrent_builds_into_a_fresh_cache(tmp_path: Path):
    # Two processes building at once (DataLoader workers, pytest-xdist): the lock and the atomic rename must leave
    # one good library that both report.
    env = {**os.environ, "M2S2L_CACHE_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "m2s2l_edge.ops.cpu_kernel", "build"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    built = Path(paths.pop())
    assert built.is_file() and built.parent.parent == tmp_path
    assert [p.name for p in built.parent.glob("*.tmp")] == []
