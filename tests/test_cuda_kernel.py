"""Our CUDA selective-scan kernel (plugins/selective_scan) and its PyTorch binding (m2s2l_edge.ops.cuda_backend).

Without a GPU (always run when the tools exist):
  - the kernel and launcher compile with nvcc for sm_87 (Jetson Orin), sm_90 (H100) and compute_90 PTX with every
    warning an error, the G = 2 / 4 variants keep their state in registers (no spills), and the launcher rejects
    bad parameters (linked and run on the CPU: validation happens before any CUDA call);
  - the kernel body itself runs on the CPU under a small emulation of the CUDA thread model (one std::thread per
    CUDA thread, barriers for __syncthreads and shuffles) and is compared with ``selective_scan_ref`` in float64:
    this checks the indexing, chunking, padding and lane reduction, not speed;
  - the binding compiles against PyTorch's headers; the Python side reports "unavailable" with the build command.
On a GPU (marked ``gpu``): parity with ``selective_scan_ref`` in float64 over random and paper-preset shapes, every
kernel variant, FP32 and FP16, plus the wrapper's dtype, stream and CUDA-graph behaviour.

Error measure: max|y - y_ref| / max|y_ref| (elementwise relative error is meaningless where y crosses zero).
Bounds: FP32 1e-5; FP16 1e-3, twice the 2^-11 relative rounding of the FP16 output itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from m2s2l_edge.ops import cuda_backend
from m2s2l_edge.ops.selective_scan import selective_scan_ref

REPO = Path(__file__).resolve().parents[1]
KERNEL_DIR = REPO / "plugins" / "selective_scan"
BINDING = REPO / "plugins" / "torch_binding" / "selective_scan_binding.cpp"
KERNEL_SOURCES = ("selectiveScanForward.cu", "selectiveScanKernelFp32.cu", "selectiveScanKernelFp16.cu")
KERNEL_HEADERS = ("selectiveScanForward.h", "selectiveScanLaunchConfig.h", "selectiveScanInstances.h",
                  "selectiveScanDeviceKernel.cuh", "selectiveScanTypedLaunch.cuh")
KERNEL_FILES = [KERNEL_DIR / name for name in (*KERNEL_SOURCES, *KERNEL_HEADERS)]

NVCC = shutil.which("nvcc")
CXX = shutil.which(os.environ.get("CXX", "g++"))
TARGETS = [
    "-gencode=arch=compute_87,code=sm_87",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
]
WERROR = ["-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror"]
FP32_BOUND = 1e-5
FP16_BOUND = 1e-3

needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH")
needs_cxx = pytest.mark.skipif(CXX is None, reason="no C++ compiler (g++ or $CXX)")


def _cuda_include_dir() -> Path | None:
    candidates = []
    if NVCC is not None:
        candidates.append(Path(NVCC).resolve().parent.parent / "include")
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            candidates.append(Path(os.environ[env]) / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    return next((c for c in candidates if (c / "cuda_runtime_api.h").is_file()), None)


CUDA_INCLUDE = _cuda_include_dir()
needs_cuda_headers = pytest.mark.skipif(CUDA_INCLUDE is None, reason="CUDA headers (cuda_runtime_api.h) not found")


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    scale = ref.abs().max().item()
    err = (out.double() - ref.double()).abs().max().item()
    return err / scale if scale > 0 else err


def make_inputs(
    batch: int,
    kd: int,
    k: int,
    n: int,
    length: int,
    dtype: torch.dtype = torch.float32,
    *,
    softplus: bool = True,
    with_d: bool = True,
    with_bias: bool = True,
    with_z: bool = False,
    seed: int = 0,
) -> dict:
    """Inputs like a trained Mamba block's: dt = softplus(delta + bias) in ~[1e-3, 1e-1], A = -(1..N) jittered.
    Without softplus dt stays positive (a negative dt makes exp(dt*A) grow and FP16 overflow)."""
    g = torch.Generator().manual_seed(seed)
    dt0 = torch.exp(torch.empty(kd).uniform_(-6.9, -2.3, generator=g))
    if softplus:
        bias = dt0 + torch.log(-torch.expm1(-dt0))  # inverse softplus
        delta = 0.5 * torch.randn(batch, kd, length, generator=g)
    else:
        bias = dt0
        delta = 0.05 * torch.rand(batch, kd, length, generator=g)
    if not with_bias:
        delta = delta + bias[:, None]
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(kd, 1) * torch.exp(0.1 * torch.randn(kd, n, generator=g))
    return {
        "u": torch.randn(batch, kd, length, generator=g).to(dtype),
        "delta": delta.to(dtype),
        "A": A,
        "B": torch.randn(batch, k, n, length, generator=g).to(dtype),
        "C": torch.randn(batch, k, n, length, generator=g).to(dtype),
        "D": torch.randn(kd, generator=g) if with_d else None,
        "z": torch.randn(batch, kd, length, generator=g).to(dtype) if with_z else None,
        "delta_bias": bias if with_bias else None,
        "delta_softplus": softplus,
    }


def reference(inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    f64 = {name: (t.double() if isinstance(t, torch.Tensor) else t) for name, t in inputs.items()}
    return selective_scan_ref(**f64, return_last_state=True)


# --------------------------------------------------------------------------------------------------------------------
# Compilation (nvcc, no GPU needed)
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The three kernel files compiled for sm_87, sm_90 and compute_90 PTX, warnings as errors; ptxas -v output."""
    if NVCC is None:
        pytest.skip("nvcc not found on PATH")
    out = tmp_path_factory.mktemp("kernel_objects")
    ptxas = {}
    for name in KERNEL_SOURCES:
        proc = _run(
            [NVCC, "-std=c++17", "-O3", *WERROR, *TARGETS, "-Xptxas", "-v", "-I", str(KERNEL_DIR), "-c",
             str(KERNEL_DIR / name), "-o", str(out / (name + ".o"))]
        )  # fmt: skip
        ptxas[name] = proc.stderr
    return out, ptxas


@pytest.mark.slow
@needs_nvcc
def test_kernel_compiles_for_orin_h100_and_ptx_with_warnings_as_errors(kernel_objects):
    out, _ = kernel_objects
    for name in KERNEL_SOURCES:
        assert (out / (name + ".o")).stat().st_size > 0


@pytest.mark.slow
@needs_nvcc
def test_kernel_variants_for_small_n_keep_their_state_in_registers(kernel_objects):
    """ptxas: the G = 2 and G = 4 kernels (N <= 64) neither spill nor use a stack frame on sm_87 / sm_90."""
    _, ptxas = kernel_objects
    checked = 0
    for name in ("selectiveScanKernelFp32.cu", "selectiveScanKernelFp16.cu"):
        blocks = re.findall(
            r"Compiling entry function '(\S+)' for '(sm_\d+)'.*?(\d+) bytes stack frame, (\d+) bytes spill stores",
            ptxas[name],
            flags=re.S,
        )
        assert blocks, ptxas[name]
        for function, arch, stack, spills in blocks:
            if re.search(r"Li[24]EE", function):
                checked += 1
                assert int(spills) == 0 and int(stack) == 0, f"{function} on {arch}: {stack} B stack, {spills} B spills"
    assert checked == 8  # {fp32, fp16} x {G2, G4} x {sm_87, sm_90}


@pytest.mark.slow
@needs_nvcc
def test_launcher_rejects_bad_parameters_before_touching_the_gpu(kernel_objects, tmp_path):
    out, _ = kernel_objects
    (tmp_path / "validate.cpp").write_text(VALIDATE_CPP)
    objects = [str(out / (name + ".o")) for name in KERNEL_SOURCES]
    exe = tmp_path / "validate"
    _run([NVCC, "-std=c++17", *WERROR, "-I", str(KERNEL_DIR), str(tmp_path / "validate.cpp"), *objects, "-o", str(exe)])
    assert _run([str(exe)]).stdout.strip() == "ok"


@needs_cxx
@needs_cuda_headers
def test_launcher_contract_compiles_as_plain_cpp(tmp_path):
    """The header the TensorRT plugin includes: plain C++17, the agreed signature, aggregate-initialisable."""
    src = tmp_path / "contract.cpp"
    src.write_text(
        '#include "selectiveScanForward.h"\n#include <type_traits>\n'
        "static_assert(std::is_same<decltype(&m2s2l::selectiveScanForward),\n"
        '    cudaError_t (*)(m2s2l::SelectiveScanParams const&, cudaStream_t)>::value, "launcher signature");\n'
        'static_assert(std::is_trivially_copyable<m2s2l::SelectiveScanParams>::value, "kernel argument");\n'
        "int main() { m2s2l::SelectiveScanParams p{};\n"
        "    return p.lastState == nullptr && p.statesPerThread == 0 ? 0 : 1; }\n"
    )
    _run([CXX, "-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-fsyntax-only", "-isystem",
          str(CUDA_INCLUDE), "-I", str(KERNEL_DIR), str(src)])  # fmt: skip


def test_kernel_files_are_all_listed():
    """Every file of the kernel folder is either the TensorRT plugin's or a kernel file listed here and in the
    extension build (whose rebuild check hashes exactly these), so a new header cannot be missed by either."""
    from m2s2l_edge.ops import cuda_backend

    plugin_side = {"scanSpec.h", "selectiveScanPlugin.h", "selectiveScanPlugin.cpp", "pluginEntry.cpp",
                   "pluginStaticRegistration.cpp", "README.md"}
    assert {p.name for p in KERNEL_DIR.iterdir()} - plugin_side == {p.name for p in KERNEL_FILES}
    assert (cuda_backend.KERNEL_SOURCES, cuda_backend.KERNEL_HEADERS) == (KERNEL_SOURCES, KERNEL_HEADERS)


def test_kernel_files_do_not_depend_on_tensorrt():
    assert all(p.is_file() for p in KERNEL_FILES), KERNEL_FILES
    for path in [*KERNEL_FILES, BINDING]:
        text = path.read_text()
        assert "NvInfer" not in text and "nvinfer1" not in text, path


@pytest.mark.slow
@needs_cxx
@needs_cuda_headers
def test_binding_compiles_against_torch_headers(tmp_path):
    """g++ -fsyntax-only of the host binding. CPU wheels of PyTorch lack c10's generated CUDA config header; an
    empty stand-in is enough for a syntax check (the real one only defines the shared-library export macro)."""
    import sysconfig

    torch_include = Path(torch.__file__).parent / "include"
    if not (torch_include / "c10" / "cuda" / "CUDAGuard.h").is_file():
        pytest.skip("this PyTorch wheel ships no c10/cuda headers")
    stub = tmp_path / "stub" / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    _run([CXX, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-DTORCH_EXTENSION_NAME=check",
          "-DTORCH_API_INCLUDE_EXTENSION_H", "-isystem", str(torch_include), "-isystem",
          str(torch_include / "torch" / "csrc" / "api" / "include"), "-isystem", sysconfig.get_paths()["include"],
          "-isystem", str(CUDA_INCLUDE), "-idirafter", str(tmp_path / "stub"), "-I", str(KERNEL_DIR), str(BINDING)],
         timeout=600)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# The kernel body on the CPU (emulated CUDA threads)
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    if CXX is None or CUDA_INCLUDE is None:
        pytest.skip("needs g++ and the CUDA headers")
    out = tmp_path_factory.mktemp("emulation")
    (out / "scan_emulation.cpp").write_text(EMULATION_CPP)
    exe = out / "scan_emulation"
    _run([CXX, "-std=c++20", "-O1", "-Wall", "-Wextra", "-Wno-unknown-pragmas", "-pthread", "-isystem",
          str(CUDA_INCLUDE), "-I", str(KERNEL_DIR), str(out / "scan_emulation.cpp"), "-o", str(exe)])  # fmt: skip
    return exe


EMULATED_CASES = [
    # (batch, KD, K, N, L, dtype, G, options): G = 4 / 2 / 8 force that kernel variant (states per thread); G = 0 lets
    # the launcher's configuration choose, for a GPU of options["sm"] SMs (default 1), and options["expect_g"] is the
    # variant it must choose. Channel counts that are not a multiple of a tile (KD / K = 10, 35, 37, 70, ...) leave a
    # partial last tile, which a floor in the tile count would drop.
    (2, 64, 4, 16, 100, torch.float32, 4, {"with_z": True}),
    (2, 64, 4, 16, 100, torch.float32, 2, {"with_z": True}),
    (2, 64, 4, 16, 100, torch.float32, 8, {"with_z": True}),
    (1, 40, 1, 16, 1, torch.float32, 4, {"softplus": False, "with_d": False, "with_bias": False}),
    (1, 40, 1, 16, 3, torch.float32, 2, {"softplus": False}),
    (2, 24, 4, 5, 67, torch.float16, 4, {"with_z": True}),
    (1, 8, 2, 1, 129, torch.float32, 2, {"with_z": True, "with_bias": False}),
    (1, 6, 1, 100, 70, torch.float32, 4, {}),
    (1, 4, 1, 256, 65, torch.float32, 8, {"with_z": True}),
    (1, 70, 1, 32, 64, torch.float32, 4, {"with_z": True}),
    (1, 16, 4, 16, 64, torch.float16, 2, {"with_bias": False, "with_d": False}),
    # Chosen by the launcher: 2·148·P(G=4)=4 lanes / 32 = 37 warps, G = 4 on 1 SM, G = 2 on 132 (an H100).
    (2, 4 * 37, 4, 16, 70, torch.float32, 0, {"with_z": True, "sm": 1, "expect_g": 4}),
    (2, 4 * 37, 4, 16, 70, torch.float32, 0, {"with_z": True, "sm": 132, "expect_g": 2}),
    (1, 70, 1, 16, 65, torch.float16, 0, {"sm": 16, "expect_g": 2}),
    (1, 10, 1, 100, 66, torch.float32, 0, {"expect_g": 4}),  # N > 64: ceil(100 / 4) = 25 → 32 lanes fit a warp
    (1, 3, 1, 256, 64, torch.float32, 0, {"expect_g": 8}),  # N = 256: G = 4 would need 64 lanes, more than a warp
]


def _run_emulation(emulator: Path, tmp_path: Path, case) -> tuple[list[int], torch.Tensor, torch.Tensor, dict]:
    """Runs one case; returns the configuration the launcher's code chose, y, the last state and the inputs."""
    import numpy as np

    batch, kd, k, n, length, dtype, states, options = case
    options = dict(options)
    sm_count = options.pop("sm", 1)
    options.pop("expect_g", None)
    inputs = make_inputs(batch, kd, k, n, length, dtype, seed=len(options) + n, **options)
    flags = [inputs["delta_softplus"], dtype == torch.float16, inputs["D"] is not None]
    flags += [inputs["delta_bias"] is not None, inputs["z"] is not None]
    header = np.array([batch, kd, k, n, length, *map(int, flags), states, 1, sm_count], dtype=np.int32)
    with open(tmp_path / "in.bin", "wb") as f:
        f.write(header.tobytes())
        for name in ("u", "delta", "A", "B", "C", "D", "delta_bias", "z"):
            if inputs[name] is not None:
                f.write(inputs[name].contiguous().numpy().tobytes())
    proc = _run([str(emulator), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")], timeout=120)
    config = [int(v) for v in proc.stdout.split("config", 1)[1].split()]
    raw = (tmp_path / "out.bin").read_bytes()
    y_bytes = batch * kd * length * (2 if dtype == torch.float16 else 4)
    y = torch.frombuffer(bytearray(raw[:y_bytes]), dtype=dtype).view(batch, kd, length)
    h = torch.frombuffer(bytearray(raw[y_bytes:]), dtype=torch.float32).view(batch, kd, n)
    return config, y, h, inputs


@needs_cuda_headers
@needs_cxx
@pytest.mark.parametrize("case", EMULATED_CASES, ids=lambda c: f"B{c[0]}-KD{c[1]}-K{c[2]}-N{c[3]}-L{c[4]}-G{c[6]}"
                         + (f"-sm{c[7]['sm']}" if "sm" in c[7] else ""))
def test_kernel_body_matches_reference_under_cpu_emulation(emulator, tmp_path, case):
    """The grid and the variant come from the launcher's own configuration code (``makeLaunchConfig``); every output
    element starts as NaN, so a channel tile that no block covers fails here."""
    states, options = case[6], case[7]
    (g, lanes_log2, tiles, blocks, _), y, h, inputs = _run_emulation(emulator, tmp_path, case)
    assert g == (states or options["expect_g"])
    assert blocks == case[0] * case[2] * tiles and (1 << lanes_log2) * g >= case[3]
    dtype = inputs["u"].dtype
    y_ref, h_ref = reference(inputs)
    bound = FP16_BOUND if dtype == torch.float16 else FP32_BOUND
    assert torch.isfinite(y).all() and torch.isfinite(h).all(), "output elements no block wrote"
    assert rel_err(y, y_ref) <= bound
    assert rel_err(h, h_ref) <= FP32_BOUND * 10


CONFIG_HARNESS_CPP = r"""
// The launcher's configuration code alone, built with plain g++ (no CUDA headers): one line per shape on stdin
// ("batch dim groups dstate hasZ statesPerThread smCount maxSmemOptin") → "status G lanesLog2 tiles blocks smem".
#include "selectiveScanLaunchConfig.h"

#include <cstdio>

int main()
{
    using namespace m2s2l::scan_detail;
    int batch, dim, groups, dstate, hasZ, states, smCount;
    unsigned long optin;
    while (std::scanf("%d %d %d %d %d %d %d %lu", &batch, &dim, &groups, &dstate, &hasZ, &states, &smCount, &optin)
        == 8)
    {
        ScanShape const shape{batch, dim, groups, dstate, hasZ != 0, states};
        ScanLaunchConfig c{};
        auto const status = makeLaunchConfig(shape, ScanDeviceLimits{smCount, optin}, c);
        std::printf("%d %d %d %d %d %zu\n", static_cast<int>(status), c.statesPerThread, c.lanesLog2, c.tilesPerGroup,
            c.numBlocks, c.smemBytes);
    }
    return 0;
}
"""


@needs_cxx
def test_launch_configuration_covers_every_channel_and_state(tmp_path):
    """Over the paper preset's shapes and awkward ones: the tiles cover every channel of a group exactly once (a
    ceil, not a floor), the lanes of a channel cover its states within one warp, the grid is batch · groups · tiles,
    shared memory fits the tile, and bad shapes or too little shared memory are refused."""
    src = tmp_path / "config.cpp"
    src.write_text(CONFIG_HARNESS_CPP)
    exe = tmp_path / "config"
    _run([CXX, "-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-I", str(KERNEL_DIR), str(src), "-o",
          str(exe)])  # fmt: skip
    big = 227 * 1024  # H100's opt-in shared memory per block
    shapes = [(b, kd, k, n, z, g, sm, big) for b in (1, 3, 8) for kd, k in ((2048, 4), (512, 1), (70, 1), (4 * 37, 4),
              (6, 2), (1, 1)) for n in (1, 5, 16, 33, 64, 100, 256) for z in (0, 1) for g in (0, 2, 4, 8)
              for sm in (1, 132)]  # fmt: skip
    shapes += [(1, 8, 1, 256, 1, 8, 1, 48 * 1024), (0, 8, 1, 16, 0, 0, 1, big), (1, 6, 4, 16, 0, 0, 1, big),
               (1, 8, 1, 257, 0, 0, 1, big), (1, 8, 1, 16, 0, 3, 1, big), (1, 8, 1, 65, 0, 2, 1, big)]
    stdin = "".join(" ".join(map(str, s)) + "\n" for s in shapes)
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, text=True, timeout=60, check=True).stdout
    results = [tuple(int(v) for v in line.split()) for line in out.splitlines()]
    assert len(results) == len(shapes)
    threads, row, floats = 128, 64 + 4, 4
    for shape, result in zip(shapes, results, strict=True):
        (b, kd, k, n, z, g_req, _, optin), (status, g, lanes_log2, tiles, blocks, smem) = shape, result
        valid = b >= 1 and kd % k == 0 and 1 <= n <= 256 and g_req in (0, 2, 4, 8) and (g_req == 0 or n <= 32 * g_req)
        if not valid:
            assert status == 1, (b, kd, k, n, g_req)
            continue
        lanes = 1 << lanes_log2
        needed = (((4 if z else 3) * (threads // lanes)) + 2 * g * lanes) * row * floats
        if needed > max(48 * 1024, optin):
            assert status == 2, (b, kd, k, n, g_req, needed)
            continue
        assert status == 0, (b, kd, k, n, g_req)
        assert g == g_req or (g_req == 0 and g in (2, 4, 8))
        assert lanes * g >= n and lanes <= 32 and (lanes == 1 or (lanes // 2) * g < n)
        channels_per_tile = threads // lanes
        assert tiles * channels_per_tile >= kd // k > (tiles - 1) * channels_per_tile, (kd, k, n, tiles)
        assert blocks == b * k * tiles and smem == needed


# --------------------------------------------------------------------------------------------------------------------
# The binding's Python side without a GPU
# --------------------------------------------------------------------------------------------------------------------

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on machines without CUDA")


@no_cuda
def test_backend_reports_unavailable_with_the_build_command():
    assert cuda_backend.is_available() is False
    reason = cuda_backend.unavailable_reason()
    assert "python -m m2s2l_edge.ops.cuda_backend build" in reason
    assert "\n" not in reason


@no_cuda
def test_selective_scan_cuda_raises_runtime_error_naming_the_build_command():
    inputs = make_inputs(1, 8, 1, 4, 16)
    with pytest.raises(RuntimeError, match="python -m m2s2l_edge.ops.cuda_backend build"):
        cuda_backend.selective_scan_cuda(**inputs)


@no_cuda
def test_dispatcher_cuda_backend_raises_instead_of_falling_back():
    from m2s2l_edge.ops.dispatch import selective_scan

    with pytest.raises(RuntimeError, match="cuda_backend build"):
        selective_scan(**make_inputs(1, 8, 1, 4, 16), backend="cuda")


def test_public_api_is_exactly_the_contract():
    import inspect

    params = list(inspect.signature(cuda_backend.selective_scan_cuda).parameters)
    ref_params = list(inspect.signature(selective_scan_ref).parameters)
    assert params == ref_params
    assert callable(cuda_backend.is_available) and callable(cuda_backend.unavailable_reason)


def test_build_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cuda_backend.EXT_DIR_ENV, str(tmp_path / "ext"))
    assert cuda_backend.build_directory() == tmp_path / "ext"
    monkeypatch.delenv(cuda_backend.EXT_DIR_ENV)
    assert cuda_backend.build_directory().parent == Path.home() / ".cache" / "m2s2l_edge" / "torch_ext"


def test_arch_list_from_the_environment(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.7;9.0+PTX")
    assert cuda_backend._gencode_flags() == [
        "-gencode=arch=compute_87,code=sm_87",
        "-gencode=arch=compute_90,code=sm_90",
        "-gencode=arch=compute_90,code=compute_90",
    ]
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "sm90")
    with pytest.raises(RuntimeError, match="TORCH_CUDA_ARCH_LIST"):
        cuda_backend._gencode_flags()


@needs_nvcc
def test_ninja_free_build_commands(monkeypatch, tmp_path):
    """The fallback for machines without ninja: compile commands for every source, one link with torch's libs."""
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(Path(NVCC).resolve().parent.parent))
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    compiles, link, library = cuda_backend._direct_build_commands(tmp_path)
    assert [cmd[cmd.index("-c") + 1] for cmd in compiles] == [str(p) for p in cuda_backend.source_files()]
    assert all(any(f.startswith("-D_GLIBCXX_USE_CXX11_ABI=") for f in cmd) for cmd in compiles)
    assert f"-DTORCH_EXTENSION_NAME={cuda_backend.EXT_NAME}" in compiles[0]
    assert {"-lc10_cuda", "-ltorch_cuda", "-ltorch_python", "-lcudart"} <= set(link)
    assert library.parent == tmp_path and library.name.startswith(cuda_backend.EXT_NAME)


@needs_nvcc
def test_toolkit_root_sees_through_an_nvcc_wrapper(monkeypatch, tmp_path):
    """A wrapper script on PATH (as /usr/local/bin/nvcc is on some machines) makes torch guess a CUDA_HOME without
    headers; the build must use the toolkit that nvcc itself reports instead."""
    from torch.utils import cpp_extension

    real_root = cuda_backend._nvcc_reported_root(NVCC)
    assert real_root is not None and cuda_backend._is_toolkit_root(real_root)
    wrapper = tmp_path / "bin" / "nvcc"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec "{NVCC}" "$@"\n')
    wrapper.chmod(0o755)
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", str(tmp_path))  # torch's guess: the wrapper's parent
    monkeypatch.setattr(cuda_backend, "DEFAULT_TOOLKIT", tmp_path / "absent")
    assert not cuda_backend._is_toolkit_root(tmp_path)
    assert cuda_backend.toolkit_root() == real_root
    compiles, link, _ = cuda_backend._direct_build_commands(tmp_path)
    assert compiles[1][0] == str(real_root / "bin" / "nvcc")
    assert f"-isystem{real_root / 'include'}" in compiles[0]


def test_toolkit_root_missing_is_one_clear_error(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvcc
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    monkeypatch.setattr(cuda_backend, "DEFAULT_TOOLKIT", tmp_path / "absent")
    with pytest.raises(RuntimeError, match="no CUDA toolkit found.*set CUDA_HOME") as info:
        cuda_backend.toolkit_root()
    assert str(tmp_path) in str(info.value)


def test_extension_sources_exist():
    for path in cuda_backend.source_files():
        assert path.is_file(), path


@pytest.mark.skipif(torch.version.cuda is not None, reason="checks the message of a CPU-only PyTorch build")
def test_build_command_fails_with_one_clear_line_on_cpu_torch():
    proc = subprocess.run(
        [sys.executable, "-m", "m2s2l_edge.ops.cuda_backend", "build", "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 1
    assert "no CUDA support" in proc.stderr and "Traceback" not in proc.stderr


def test_gpu_check_script_parses():
    _run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")])


def test_benchmark_dry_run_exercises_every_section(tmp_path, monkeypatch):
    """The GPU benchmark's Python paths on the CPU (selective_scan_torch stands in for the kernel, tiny model)."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_scan_cuda", REPO / "benchmarks" / "bench_scan_cuda.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up while being created
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--dry-run", "--budget-s", "300", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["parity"] and all(p["ok"] for p in report["parity"])
    assert report["speed"] and all("kernel_ms" in s and "floor_ms" in s for s in report["speed"])
    assert report["model"] and all("eager_fps" in m for m in report["model"]), report["model"]
    assert not report["errors"]
    assert {s.name for s in bench.paper_shapes()} >= {"ss2d_fine32x32_b8", "temporal_w1_b1"}


# --------------------------------------------------------------------------------------------------------------------
# GPU: parity with the reference
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ext():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is False)")
    # With a GPU present the extension must build: a failure here is a failure, not a skip.
    assert cuda_backend.is_available(), cuda_backend.unavailable_reason()
    return cuda_backend


def _to_cuda(inputs: dict) -> dict:
    return {name: (t.cuda() if isinstance(t, torch.Tensor) else t) for name, t in inputs.items()}


def _check(inputs: dict, states_per_thread: int = 0) -> None:
    dtype = inputs["u"].dtype
    y_ref, h_ref = reference(inputs)
    y, h = cuda_backend._selective_scan_cuda(**inputs, return_last_state=True, states_per_thread=states_per_thread)
    assert y.dtype == dtype and y.shape == inputs["u"].shape and y.is_cuda
    assert h.dtype == torch.float32 and h.shape == h_ref.shape
    bound = FP16_BOUND if dtype == torch.float16 else FP32_BOUND
    y_err, h_err = rel_err(y, y_ref), rel_err(h, h_ref)
    assert y_err <= bound, f"y error {y_err:.3e} > {bound:.0e}"
    assert h_err <= FP32_BOUND * 10, f"state error {h_err:.3e}"


RANDOM_SHAPES = [
    # (batch, KD, K, N, L, options)
    (2, 64, 4, 16, 1, {"with_z": True}),
    (3, 96, 4, 16, 127, {"with_z": True, "with_bias": False}),
    (2, 40, 1, 16, 200, {"softplus": False}),
    (1, 24, 4, 16, 333, {"with_z": True, "with_d": False}),
    (2, 36, 2, 5, 65, {}),
    (1, 64, 1, 64, 130, {"with_z": True}),
    (1, 8, 1, 256, 70, {}),
    (2, 128, 4, 16, 1024, {"with_z": True}),
    (1, 4 * 37, 4, 16, 96, {"softplus": False, "with_z": True}),
    (4, 512, 1, 16, 768, {}),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("states_per_thread", [0, 2, 4, 8], ids=["auto", "G2", "G4", "G8"])
@pytest.mark.parametrize("shape", RANDOM_SHAPES, ids=lambda s: f"B{s[0]}-KD{s[1]}-K{s[2]}-N{s[3]}-L{s[4]}")
def test_gpu_parity_random_shapes(ext, shape, states_per_thread, dtype):
    batch, kd, k, n, length, options = shape
    if states_per_thread and n > 32 * states_per_thread:
        pytest.skip(f"G={states_per_thread} holds at most {32 * states_per_thread} states")
    _check(_to_cuda(make_inputs(batch, kd, k, n, length, dtype, seed=n + length, **options)), states_per_thread)


PAPER_SHAPES = [
    # SS2D: KD = 4 x 512, K = 4, N = 16 over the fine / medium / coarse grids; temporal: KD = 512, K = 1.
    *[(b, 2048, 4, 16, length) for b in (1, 8) for length in (1024, 256, 64)],
    *[(b, 512, 1, 16, length) for b in (1, 8) for length in (768, 512, 256)],
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", PAPER_SHAPES, ids=lambda s: f"B{s[0]}-KD{s[1]}-K{s[2]}-L{s[4]}")
def test_gpu_parity_paper_shapes(ext, shape, dtype):
    _check(_to_cuda(make_inputs(*shape, dtype, seed=shape[4])))
    torch.cuda.empty_cache()


@pytest.mark.gpu
def test_gpu_non_contiguous_mixed_and_bf16_inputs(ext):
    inputs = _to_cuda(make_inputs(2, 32, 4, 16, 50, torch.float32, with_z=True))
    # A transposed view of u: the wrapper makes it contiguous, values unchanged.
    inputs["u"] = inputs["u"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not inputs["u"].is_contiguous()
    _check(inputs)
    # FP16 activations with FP32 B/C: computed by the FP32 kernel (never narrowed), y in u's dtype.
    mixed = {**inputs, "u": inputs["u"].half(), "delta": inputs["delta"].half()}
    y = cuda_backend.selective_scan_cuda(**mixed)
    assert y.dtype == torch.float16 and rel_err(y, reference(mixed)[0]) <= FP16_BOUND
    bf16 = {name: (t.bfloat16() if name in ("u", "delta", "B", "C", "z") else t) for name, t in inputs.items()}
    y = cuda_backend.selective_scan_cuda(**bf16)
    assert y.dtype == torch.bfloat16 and rel_err(y, reference(bf16)[0]) <= 1e-2


@pytest.mark.gpu
def test_gpu_wrapper_errors(ext):
    inputs = _to_cuda(make_inputs(1, 8, 1, 4, 16))
    with pytest.raises(ValueError, match="float64"):
        cuda_backend.selective_scan_cuda(**{**inputs, "u": inputs["u"].double()})
    with pytest.raises(ValueError, match="CUDA device"):
        cuda_backend.selective_scan_cuda(**{**inputs, "B": inputs["B"].cpu()})
    with pytest.raises(ValueError):
        cuda_backend.selective_scan_cuda(**{**inputs, "B": inputs["B"][:, :, :2]})
    with pytest.raises(RuntimeError, match="forward-only"):
        cuda_backend.selective_scan_cuda(**{**inputs, "u": inputs["u"].clone().requires_grad_(True)})
    with torch.no_grad():
        cuda_backend.selective_scan_cuda(**{**inputs, "u": inputs["u"].clone().requires_grad_(True)})


@pytest.mark.gpu
def test_gpu_empty_and_side_stream_and_cuda_graph(ext):
    empty = _to_cuda(make_inputs(0, 8, 1, 4, 16))
    y, h = cuda_backend.selective_scan_cuda(**empty, return_last_state=True)
    assert y.shape == (0, 8, 16) and h.shape == (0, 8, 4)

    inputs = _to_cuda(make_inputs(2, 64, 4, 16, 300, torch.float16, with_z=True))
    expected = cuda_backend.selective_scan_cuda(**inputs)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        on_side = cuda_backend.selective_scan_cuda(**inputs)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(on_side, expected)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = cuda_backend.selective_scan_cuda(**inputs)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, expected)


@pytest.mark.gpu
def test_gpu_dispatcher_uses_the_kernel(ext):
    from m2s2l_edge.ops.dispatch import selective_scan

    inputs = _to_cuda(make_inputs(1, 32, 4, 16, 40, torch.float16))
    assert torch.equal(selective_scan(**inputs, backend="cuda"), cuda_backend.selective_scan_cuda(**inputs))


@pytest.mark.gpu
def test_gpu_auto_trains_through_torch_and_infers_through_the_kernel(ext):
    from m2s2l_edge.ops import dispatch

    if dispatch.resolve_backend("auto", "cuda") != "cuda":
        pytest.skip("auto picks mamba_ssm on this machine")
    inputs = _to_cuda(make_inputs(2, 32, 4, 16, 50, torch.float32))
    with torch.no_grad():
        y_kernel = dispatch.selective_scan(**inputs, backend="auto")
    assert torch.equal(y_kernel, cuda_backend.selective_scan_cuda(**inputs))
    u = inputs["u"].clone().requires_grad_(True)
    y = dispatch.selective_scan(**{**inputs, "u": u}, backend="auto")
    y.square().sum().backward()
    assert u.grad is not None and torch.isfinite(u.grad).all()
    assert rel_err(y.detach(), y_kernel) <= FP32_BOUND


def test_auto_never_sends_a_gradient_to_the_forward_only_kernel(monkeypatch):
    """Where auto means 'cuda' (forced here: no GPU), a call that needs a gradient runs the torch path instead."""
    from m2s2l_edge.ops import dispatch, kernels
    from m2s2l_edge.ops.selective_scan import selective_scan_torch

    monkeypatch.setattr(kernels, "auto_backend", lambda device_type: "cuda")
    inputs = make_inputs(1, 8, 1, 4, 12, torch.float32)
    u = inputs["u"].clone().requires_grad_(True)
    y = dispatch.selective_scan(**{**inputs, "u": u}, backend="auto")
    assert y.grad_fn is not None
    torch.testing.assert_close(y, selective_scan_torch(**{**inputs, "u": u}))
    # Without a gradient auto goes to the kernel, which (no GPU here) is the real, explicit error.
    with torch.no_grad(), pytest.raises(RuntimeError, match="scan backend 'cuda' is unavailable"):
        dispatch.selective_scan(**inputs, backend="auto")
    with pytest.raises(RuntimeError, match="scan backend 'cuda' is unavailable"):
        dispatch.selective_scan(**{**inputs, "u": u}, backend="cuda")  # explicit: never rerouted


VALIDATE_CPP = r"""
#include "selectiveScanForward.h"

#include <cstdio>

using m2s2l::SelectiveScanParams;

int main()
{
    static float buffer[64] = {};
    SelectiveScanParams base{};
    base.batch = 1;
    base.dim = 4;
    base.groups = 1;
    base.dstate = 16;
    base.seqlen = 8;
    base.ioDtype = m2s2l::ScanDType::kFLOAT32;
    base.u = base.delta = base.B = base.C = buffer;
    base.A = buffer;
    base.y = buffer;
    struct Case
    {
        char const* name;
        void (*mutate)(SelectiveScanParams&);
    };
    Case const cases[] = {
        {"batch=0", [](SelectiveScanParams& p) { p.batch = 0; }},
        {"dim=0", [](SelectiveScanParams& p) { p.dim = 0; }},
        {"groups=0", [](SelectiveScanParams& p) { p.groups = 0; }},
        {"dim%groups", [](SelectiveScanParams& p) { p.dim = 6; p.groups = 4; }},
        {"dstate=0", [](SelectiveScanParams& p) { p.dstate = 0; }},
        {"dstate=257", [](SelectiveScanParams& p) { p.dstate = 257; }},
        {"seqlen=0", [](SelectiveScanParams& p) { p.seqlen = 0; }},
        {"ioDtype", [](SelectiveScanParams& p) { p.ioDtype = static_cast<m2s2l::ScanDType>(7); }},
        {"u=null", [](SelectiveScanParams& p) { p.u = nullptr; }},
        {"A=null", [](SelectiveScanParams& p) { p.A = nullptr; }},
        {"y=null", [](SelectiveScanParams& p) { p.y = nullptr; }},
        {"statesPerThread=3", [](SelectiveScanParams& p) { p.statesPerThread = 3; }},
        {"G=2,N=65", [](SelectiveScanParams& p) { p.statesPerThread = 2; p.dstate = 65; }},
    };
    int failures = 0;
    for (Case const& c : cases)
    {
        SelectiveScanParams p = base;
        c.mutate(p);
        cudaError_t const status = m2s2l::selectiveScanForward(p, nullptr);
        if (status != cudaErrorInvalidValue)
        {
            std::printf("FAIL %s: %d\n", c.name, static_cast<int>(status));
            ++failures;
        }
    }
    std::printf(failures == 0 ? "ok\n" : "failed\n");
    return failures == 0 ? 0 : 1;
}
"""

EMULATION_CPP = r"""
// CPU emulation of the CUDA thread model, just enough to run selectiveScanFwdKernel on the host: one std::thread
// per CUDA thread, std::barrier for __syncthreads and for warp shuffles. It checks the kernel's indexing, chunking,
// padding and lane reduction on machines without a GPU; it says nothing about speed or about SFU accuracy.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

namespace emu
{
struct ThreadCtx
{
    uint3 thread;
    uint3 block;
};
thread_local ThreadCtx ctx;
std::barrier<>* blockBarrier = nullptr;
std::barrier<>* warpBarrier[4] = {};
float warpSlots[4][32];
} // namespace emu

#define threadIdx (emu::ctx.thread)
#define blockIdx (emu::ctx.block)
#define __launch_bounds__(...)

inline void __syncthreads()
{
    emu::blockBarrier->arrive_and_wait();
}

inline float __shfl_xor_sync(unsigned, float v, int laneMask)
{
    int const tid = static_cast<int>(threadIdx.x);
    int const w = tid / 32;
    int const l = tid % 32;
    emu::warpSlots[w][l] = v;
    emu::warpBarrier[w]->arrive_and_wait();
    float const r = emu::warpSlots[w][l ^ laneMask];
    emu::warpBarrier[w]->arrive_and_wait();
    return r;
}

template <typename T>
T __ldg(T const* p)
{
    return *p;
}

inline float __expf(float x)
{
    return std::exp(x);
}

inline float __fdividef(float a, float b)
{
    return a / b;
}

using std::min;

#include "selectiveScanDeviceKernel.cuh"

namespace m2s2l
{
namespace scan_detail
{
float4 smemRaw[1 << 16];
} // namespace scan_detail
} // namespace m2s2l

namespace
{
template <typename T>
std::vector<T> readArray(std::FILE* f, size_t count)
{
    std::vector<T> v(count);
    if (count != 0 && std::fread(v.data(), sizeof(T), count, f) != count)
    {
        std::fprintf(stderr, "short read\n");
        std::exit(2);
    }
    return v;
}

template <typename T, int32_t kStates>
void runKernel(m2s2l::SelectiveScanParams const& p, int32_t lanesLog2, int32_t tilesPerGroup, int32_t numBlocks,
    size_t smemBytes)
{
    using namespace m2s2l::scan_detail;
    if (smemBytes > sizeof(smemRaw))
    {
        std::fprintf(stderr, "shared memory too large for the emulation\n");
        std::exit(2);
    }
    for (int32_t block = 0; block < numBlocks; ++block)
    {
        // NaN-fill: reading a shared-memory word the kernel did not write this chunk poisons the output.
        std::fill_n(reinterpret_cast<float*>(smemRaw), smemBytes / sizeof(float), std::nanf(""));
        std::barrier<> blockBarrier(kTHREADS);
        std::vector<std::unique_ptr<std::barrier<>>> warps;
        for (int32_t w = 0; w < kTHREADS / 32; ++w)
        {
            warps.push_back(std::make_unique<std::barrier<>>(32));
            emu::warpBarrier[w] = warps.back().get();
        }
        emu::blockBarrier = &blockBarrier;
        std::vector<std::thread> threads;
        for (int32_t t = 0; t < kTHREADS; ++t)
        {
            threads.emplace_back([&, t] {
                emu::ctx.thread = uint3{static_cast<unsigned>(t), 0, 0};
                emu::ctx.block = uint3{static_cast<unsigned>(block), 0, 0};
                selectiveScanFwdKernel<T, kStates>(p, lanesLog2, tilesPerGroup);
            });
        }
        for (auto& th : threads)
        {
            th.join();
        }
    }
}
} // namespace

// Usage: scan_emulation IN OUT. IN: 13 int32 (batch, dim, groups, dstate, seqlen, softplus, fp16, hasD, hasBias,
// hasZ, statesPerThread (0: the launcher chooses), lastState, smCount) then u, delta, A, B, C, [D], [bias], [z].
// OUT: y (io dtype), [lastState f32]. stdout: the launch configuration used, from the launcher's own
// scan_detail::makeLaunchConfig (selectiveScanLaunchConfig.h), as "config G lanesLog2 tilesPerGroup numBlocks smem".
int main(int argc, char** argv)
{
    if (argc != 3)
    {
        return 2;
    }
    std::FILE* in = std::fopen(argv[1], "rb");
    if (in == nullptr)
    {
        return 2;
    }
    auto const hdr = readArray<int32_t>(in, 13);
    m2s2l::SelectiveScanParams p{};
    p.batch = hdr[0];
    p.dim = hdr[1];
    p.groups = hdr[2];
    p.dstate = hdr[3];
    p.seqlen = hdr[4];
    p.deltaSoftplus = hdr[5] != 0;
    bool const fp16 = hdr[6] != 0;
    p.ioDtype = fp16 ? m2s2l::ScanDType::kFLOAT16 : m2s2l::ScanDType::kFLOAT32;
    p.statesPerThread = hdr[10];
    size_t const elem = fp16 ? 2 : 4;
    size_t const nU = static_cast<size_t>(p.batch) * p.dim * p.seqlen;
    size_t const nBC = static_cast<size_t>(p.batch) * p.groups * p.dstate * p.seqlen;
    auto const u = readArray<uint8_t>(in, nU * elem);
    auto const delta = readArray<uint8_t>(in, nU * elem);
    auto const A = readArray<float>(in, static_cast<size_t>(p.dim) * p.dstate);
    auto const B = readArray<uint8_t>(in, nBC * elem);
    auto const C = readArray<uint8_t>(in, nBC * elem);
    auto const D = readArray<float>(in, hdr[7] ? p.dim : 0);
    auto const bias = readArray<float>(in, hdr[8] ? p.dim : 0);
    auto const z = readArray<uint8_t>(in, hdr[9] ? nU * elem : 0);
    std::fclose(in);
    // All-ones bytes are NaN in FP32 and FP16: an output element no block writes cannot pass for a result.
    std::vector<uint8_t> y(nU * elem, 0xFF);
    std::vector<float> last(hdr[11] ? static_cast<size_t>(p.batch) * p.dim * p.dstate : 0, std::nanf(""));
    p.u = u.data();
    p.delta = delta.data();
    p.A = A.data();
    p.B = B.data();
    p.C = C.data();
    p.D = hdr[7] ? D.data() : nullptr;
    p.deltaBias = hdr[8] ? bias.data() : nullptr;
    p.z = hdr[9] ? z.data() : nullptr;
    p.y = y.data();
    p.lastState = hdr[11] ? last.data() : nullptr;

    using namespace m2s2l::scan_detail;
    ScanShape const shape{p.batch, p.dim, p.groups, p.dstate, p.z != nullptr, p.statesPerThread};
    ScanDeviceLimits const limits{hdr[12], sizeof(smemRaw)};
    ScanLaunchConfig c{};
    if (makeLaunchConfig(shape, limits, c) != ScanConfigStatus::kOK)
    {
        std::fprintf(stderr, "makeLaunchConfig refused the shape\n");
        return 3;
    }
    std::printf("config %d %d %d %d %zu\n", c.statesPerThread, c.lanesLog2, c.tilesPerGroup, c.numBlocks,
        c.smemBytes);
    switch (c.statesPerThread * 2 + (fp16 ? 1 : 0))
    {
    case 4: runKernel<float, 2>(p, c.lanesLog2, c.tilesPerGroup, c.numBlocks, c.smemBytes); break;
    case 5: runKernel<__half, 2>(p, c.lanesLog2, c.tilesPerGroup, c.numBlocks, c.smemBytes); break;
    case 8: runKernel<float, 4>(p, c.lanesLog2, c.tilesPerGroup, c.numBlocks, c.smemBytes); break;
    case 9: runKernel<__half, 4>(p, c.lanesLog2, c.tilesPerGroup, c.numBlocks, c.smemBytes); break;
    case 16: runKernel<float, 8>(p, c.lanesLog2, c.tilesPerGroup, c.numBlocks, c.smemBytes); break;
    case 17: runKernel<__half, 8>(p, c.lanesLog2, c.tilesPerGroup, c.numBlocks, c.smemBytes); break;
    default: return 2;
    }
    std::FILE* out = std::fopen(argv[2], "wb");
    if (out == nullptr)
    {
        return 2;
    }
    std::fwrite(y.data(), 1, y.size(), out);
    std::fwrite(last.data(), sizeof(float), last.size(), out);
    std::fclose(out);
    return 0;
}
"""
