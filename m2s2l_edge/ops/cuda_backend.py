"""Our CUDA selective-scan kernel (``plugins/selective_scan``) from PyTorch: forward only, built on first use.

The extension is the kernel's own ``.cu`` files plus a thin host binding (``plugins/torch_binding``), compiled with
``torch.utils.cpp_extension.load`` for the GPUs visible at build time (``TORCH_CUDA_ARCH_LIST`` overrides). It is
built by the first call that needs it, or ahead of time with::

    python -m m2s2l_edge.ops.cuda_backend build

Build directory: ``$M2S2L_EXT_DIR`` if set, else ``~/.cache/m2s2l_edge/torch_ext/<torch>-<cuda>``. The sources are
read from the source tree this package lives in (a checkout used with ``pip install -e .`` or ``PYTHONPATH=.``).

Shapes and semantics are those of ``selective_scan_ref`` (see ``m2s2l_edge.ops.selective_scan``)::

    u, delta, z: (B, KD, L)    A: (KD, N)    B, C: (B, K, N, L)    D, delta_bias: (KD,)
    y: (B, KD, L), dtype of u    last_state: (B, KD, N), float32

The kernel reads FP16 or FP32 activations and keeps the state in FP32; inputs of any other floating dtype
(bfloat16, or a mix of FP16 and FP32) run through the FP32 kernel and y is cast back to u's dtype. float64 is
refused rather than silently computed in FP32.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import torch

from m2s2l_edge.ops.selective_scan import check_scan_inputs

logger = logging.getLogger(__name__)

Tensor = torch.Tensor

BUILD_COMMAND = "python -m m2s2l_edge.ops.cuda_backend build"
EXT_DIR_ENV = "M2S2L_EXT_DIR"
EXT_NAME = "m2s2l_selective_scan_cuda"

_REPO_ROOT = Path(__file__).resolve().parents[2]
KERNEL_DIR = _REPO_ROOT / "plugins" / "selective_scan"
BINDING_SOURCE = _REPO_ROOT / "plugins" / "torch_binding" / "selective_scan_binding.cpp"
KERNEL_SOURCES = ("selectiveScanForward.cu", "selectiveScanKernelFp32.cu", "selectiveScanKernelFp16.cu")
# What those sources include from the kernel folder (a change in any of them must rebuild the extension).
KERNEL_HEADERS = ("selectiveScanForward.h", "selectiveScanLaunchConfig.h", "selectiveScanInstances.h",
                  "selectiveScanDeviceKernel.cuh", "selectiveScanTypedLaunch.cuh")
# Targets when no GPU is visible at build time: Jetson Orin, H100, and PTX for anything newer.
DEFAULT_ARCHS = ((8, 7), (9, 0))
# Where the toolkit is when neither CUDA_HOME, torch nor an nvcc on PATH says otherwise (also JetPack's location).
DEFAULT_TOOLKIT = Path("/usr/local/cuda")


def source_files() -> list[Path]:
    """The binding and the kernel files the extension is compiled from."""
    return [BINDING_SOURCE, *(KERNEL_DIR / name for name in KERNEL_SOURCES)]


def build_directory() -> Path:
    """Where the extension is built: ``$M2S2L_EXT_DIR``, else a per-(torch, CUDA) folder under ~/.cache."""
    override = os.environ.get(EXT_DIR_ENV)
    if override:
        return Path(override).expanduser()
    # One folder per torch/CUDA pair: an extension built against another torch would fail to import (ABI).
    tag = re.sub(r"[^A-Za-z0-9._-]", "_", f"torch{torch.__version__}-cu{torch.version.cuda}")
    return Path.home() / ".cache" / "m2s2l_edge" / "torch_ext" / tag


def _archs() -> list[tuple[tuple[int, int], bool]]:
    """(compute capability, with PTX) to compile for: TORCH_CUDA_ARCH_LIST, else the visible GPUs, else Orin + H100."""
    listed = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if listed:
        archs = []
        for item in re.split(r"[;\s]+", listed):
            m = re.fullmatch(r"(\d+)\.(\d+)(\+PTX)?", item)
            if m is None:
                raise RuntimeError(f"TORCH_CUDA_ARCH_LIST entry {item!r} is not like '9.0' or '9.0+PTX'")
            archs.append(((int(m.group(1)), int(m.group(2))), m.group(3) is not None))
        return archs
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    else:
        caps = list(DEFAULT_ARCHS)
    # SASS for each, plus PTX of the newest so that a later GPU can JIT it.
    return [(cap, cap == caps[-1]) for cap in caps]


def _gencode_flags() -> list[str]:
    flags = []
    for (major, minor), ptx in _archs():
        flags.append(f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{major}{minor},code=compute_{major}{minor}")
    return flags


def build(verbose: bool = False) -> ModuleType:
    """Compile (if needed) and import the extension. Raises RuntimeError with the reason when that is impossible."""
    if torch.version.cuda is None:
        raise RuntimeError(
            f"this PyTorch build ({torch.__version__}) has no CUDA support; install a CUDA build of PyTorch and "
            f"run `{BUILD_COMMAND}`"
        )
    missing = [str(p) for p in source_files() if not p.is_file()]
    if missing:
        raise RuntimeError(
            f"kernel sources not found ({', '.join(missing)}); the CUDA backend builds from a source checkout "
            f"(pip install -e . or PYTHONPATH=<checkout>), then `{BUILD_COMMAND}`"
        )
    from torch.utils import cpp_extension

    build_dir = build_directory()
    build_dir.mkdir(parents=True, exist_ok=True)
    logger.info("building/loading the CUDA selective-scan extension in %s (a first build takes ~1 min)", build_dir)
    try:
        root = toolkit_root()
        if not cpp_extension.is_ninja_available():
            # torch's JIT loader needs ninja, which a bare CUDA machine may lack: compile with nvcc and c++ directly.
            return _build_without_ninja(build_dir, verbose, root)
        if not _is_toolkit_root(cpp_extension.CUDA_HOME):
            # torch guessed CUDA_HOME from an nvcc wrapper (e.g. /usr/local/bin/nvcc -> /usr/local): its JIT loader
            # would miss cuda_runtime_api.h, so compile with the toolkit nvcc itself reports.
            logger.info("torch's CUDA_HOME (%s) has no CUDA headers; building with %s", cpp_extension.CUDA_HOME, root)
            return _build_without_ninja(build_dir, verbose, root)
        return cpp_extension.load(
            name=EXT_NAME,
            sources=[str(p) for p in source_files()],
            extra_include_paths=[str(KERNEL_DIR)],
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", "-lineinfo", *_gencode_flags()],
            build_directory=str(build_dir),
            verbose=verbose,
        )
    except Exception as exc:  # compiler, linker and import failures arrive as several exception types
        raise RuntimeError(f"building the CUDA selective-scan extension failed: {exc}") from exc


def _is_toolkit_root(path: str | Path | None) -> bool:
    return (
        path is not None
        and (Path(path) / "include" / "cuda_runtime_api.h").is_file()
        and (Path(path) / "bin" / "nvcc").is_file()
    )


def _nvcc_reported_root(nvcc: str) -> Path | None:
    """The toolkit an nvcc really uses: ``nvcc --dryrun`` prints ``TOP=<root>``, which also sees through wrapper
    scripts that a symlink resolve would not."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "probe.cu"
        source.write_text("")
        try:
            proc = subprocess.run(
                [nvcc, "--dryrun", "-c", str(source), "-o", str(Path(tmp) / "probe.o")],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
    m = re.search(r"^#\$ TOP=(.+)$", proc.stdout + proc.stderr, flags=re.MULTILINE)
    return Path(m.group(1).strip()).resolve() if m else None


def toolkit_root() -> Path:
    """The CUDA toolkit to build with: ``$CUDA_HOME`` / ``$CUDA_PATH``, else torch's guess, else what the ``nvcc``
    on PATH reports, else ``DEFAULT_TOOLKIT``; the first that has both ``bin/nvcc`` and ``include/cuda_runtime_api.h``.
    Raises RuntimeError naming what was tried."""
    from torch.utils import cpp_extension

    candidates: list[Path] = [Path(os.environ[v]) for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    if cpp_extension.CUDA_HOME:
        candidates.append(Path(cpp_extension.CUDA_HOME))
    for candidate in candidates:
        if _is_toolkit_root(candidate):
            return candidate
    nvcc = shutil.which("nvcc")
    reported = _nvcc_reported_root(nvcc) if nvcc else None
    for candidate in (reported, DEFAULT_TOOLKIT):
        if candidate is not None and _is_toolkit_root(candidate):
            return candidate
    tried = [str(c) for c in candidates] + ([f"{reported} (from {nvcc})"] if reported else []) + [str(DEFAULT_TOOLKIT)]
    raise RuntimeError(
        "no CUDA toolkit found (need bin/nvcc and include/cuda_runtime_api.h; tried "
        f"{', '.join(dict.fromkeys(tried))}); set CUDA_HOME to the toolkit folder"
    )


def _direct_build_commands(build_dir: Path, cuda_root: Path | None = None) -> tuple[list[list[str]], list[str], Path]:
    """(compile commands, link command, library path) of the ninja-free build; the same flags torch's JIT uses
    where they matter: the C++11 ABI of the torch build, the extension name, PIC, torch's and CUDA's headers."""
    cuda_root = toolkit_root() if cuda_root is None else cuda_root
    nvcc = str(cuda_root / "bin" / "nvcc")
    cxx = os.environ.get("CXX", "c++")
    torch_dir = Path(torch.__file__).resolve().parent
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    includes = [
        torch_dir / "include",
        torch_dir / "include" / "torch" / "csrc" / "api" / "include",
        cuda_root / "include",
        Path(sysconfig.get_paths()["include"]),
    ]
    compiles = [
        [cxx, "-std=c++17", "-O3", "-fPIC", abi, f"-DTORCH_EXTENSION_NAME={EXT_NAME}",
         "-DTORCH_API_INCLUDE_EXTENSION_H", *(f"-isystem{p}" for p in includes), f"-I{KERNEL_DIR}", "-c",
         str(BINDING_SOURCE), "-o", str(build_dir / "selective_scan_binding.o")],
    ]  # fmt: skip
    for name in KERNEL_SOURCES:
        compiles.append(
            [nvcc, "-std=c++17", "-O3", "-lineinfo", *_gencode_flags(), "-Xcompiler", "-fPIC", abi,
             f"-I{KERNEL_DIR}", "-c", str(KERNEL_DIR / name), "-o", str(build_dir / f"{name}.o")]
        )  # fmt: skip
    library = build_dir / f"{EXT_NAME}{sysconfig.get_config_var('EXT_SUFFIX') or '.so'}"
    cuda_lib = next((d for d in (cuda_root / "lib64", cuda_root / "lib") if d.is_dir()), cuda_root / "lib64")
    link = [
        cxx, "-shared", *(cmd[cmd.index("-o") + 1] for cmd in compiles), f"-L{torch_dir / 'lib'}", "-lc10",
        "-lc10_cuda", "-ltorch", "-ltorch_cpu", "-ltorch_cuda", "-ltorch_python", f"-L{cuda_lib}", "-lcudart", "-o",
        str(library) + ".tmp",
    ]  # fmt: skip
    return compiles, link, library


def _build_without_ninja(build_dir: Path, verbose: bool, cuda_root: Path | None = None) -> ModuleType:
    import hashlib
    import importlib.util
    import subprocess

    compiles, link, library = _direct_build_commands(build_dir, cuda_root)
    digest = hashlib.sha256(repr((compiles, link, torch.__version__)).encode())
    for path in source_files() + [KERNEL_DIR / name for name in KERNEL_HEADERS]:
        digest.update(path.read_bytes())
    stamp = library.with_suffix(".sha256")
    if not (library.is_file() and stamp.is_file() and stamp.read_text() == digest.hexdigest()):
        procs = [(cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
                 for cmd in compiles]  # fmt: skip
        failures = []
        for cmd, proc in procs:
            output, _ = proc.communicate()
            if verbose or proc.returncode != 0:
                logger.info("%s\n%s", " ".join(cmd), output)
            if proc.returncode != 0:
                failures.append(f"{Path(cmd[0]).name} {cmd[cmd.index('-c') + 1]} (exit {proc.returncode})")
        if failures:
            raise RuntimeError(f"compilation failed: {'; '.join(failures)}")
        proc = subprocess.run(link, capture_output=True, text=True)
        if verbose or proc.returncode != 0:
            logger.info("%s\n%s%s", " ".join(link), proc.stdout, proc.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"linking failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        os.replace(link[-1], library)  # atomic: a concurrent loader sees the old or the new library, never half
        stamp.write_text(digest.hexdigest())
    spec = importlib.util.spec_from_file_location(EXT_NAME, library)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _extension() -> tuple[ModuleType | None, str]:
    """The loaded extension, or None and the reason; built at most once per process (cached, never raises)."""
    if torch.version.cuda is None:
        return None, (
            f"the CUDA selective-scan kernel needs a CUDA build of PyTorch (this is {torch.__version__}); "
            f"on a CUDA machine build it with `{BUILD_COMMAND}`"
        )
    if not torch.cuda.is_available():
        return None, (
            "torch.cuda.is_available() is False (no CUDA device or driver); "
            f"on a CUDA machine build the kernel with `{BUILD_COMMAND}`"
        )
    try:
        return build(verbose=False), ""
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"{first_line[:300]}; run `{BUILD_COMMAND}` to see the compiler output"


def is_available() -> bool:
    """True when a CUDA device is visible and the extension builds and loads. Cached; never raises."""
    return _extension()[0] is not None


def unavailable_reason() -> str:
    """One line saying why ``is_available()`` is False, with the build command; empty when it is available."""
    return _extension()[1]


def device_attributes(device: int = 0) -> dict[str, int]:
    """SM clock, SM count and memory attributes from cudaDeviceGetAttribute (CUDA 13 dropped them from the props)."""
    ext = _require_extension()
    clock_khz, sm_count, smem_optin, mem_clock_khz, bus_width = ext.device_attributes(device)
    return {
        "sm_clock_khz": clock_khz,
        "sm_count": sm_count,
        "max_smem_per_block_optin": smem_optin,
        "memory_clock_khz": mem_clock_khz,
        "memory_bus_width_bits": bus_width,
    }


def _require_extension() -> ModuleType:
    ext, reason = _extension()
    if ext is None:
        raise RuntimeError(f"the CUDA selective-scan backend is unavailable: {reason}")
    return ext


def _io_dtype(tensors: list[Tensor]) -> torch.dtype:
    # The FP16 kernel only when every activation is FP16: anything else is widened, never narrowed.
    return torch.float16 if all(t.dtype == torch.float16 for t in tensors) else torch.float32


def selective_scan_cuda(
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
    """Forward selective scan on our CUDA kernel, with the contract of ``selective_scan_ref``.

    Shapes: u, delta, z (B, KD, L); A (KD, N); B, C (B, K, N, L); D, delta_bias (KD,) → y (B, KD, L) in u's dtype,
    and with ``return_last_state`` also h_L (B, KD, N) float32. Forward only: raises RuntimeError when a gradient
    would be needed (use backend ``torch`` for training) or when the extension is unavailable.
    """
    return _selective_scan_cuda(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, states_per_thread=0
    )


def _selective_scan_cuda(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    return_last_state: bool,
    states_per_thread: int,
) -> Tensor | tuple[Tensor, Tensor]:
    """``selective_scan_cuda`` with the kernel variant forced (``states_per_thread`` 2, 4 or 8; 0 = automatic),
    for the parity tests and the benchmark's variant sweep."""
    ext = _require_extension()
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    if states_per_thread not in (0, 2, 4, 8):
        raise ValueError(f"states_per_thread must be 0 (automatic), 2, 4 or 8, got {states_per_thread}")
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    present = {name: t for name, t in named.items() if t is not None}
    for name, t in present.items():
        if t.device != u.device or not t.is_cuda:
            raise ValueError(f"selective_scan_cuda: every tensor must be on one CUDA device; {name} is on {t.device}")
        if t.dtype == torch.float64:
            raise ValueError(
                f"selective_scan_cuda: {name} is float64, which the kernel does not compute in; "
                "use backend='torch' or 'ref' for float64"
            )
    if torch.is_grad_enabled() and any(t.requires_grad for t in present.values()):
        raise RuntimeError(
            "selective_scan_cuda is forward-only: call it under torch.no_grad()/torch.inference_mode(), or use "
            "backend='torch' or 'auto' (which routes calls that need a gradient to torch)"
        )
    activations = [t for t in (u, delta, B, C, z) if t is not None]
    io = _io_dtype(activations)

    def act(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(io).contiguous()

    def fp32(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(torch.float32).contiguous()

    out = ext.fwd(
        act(u),
        act(delta),
        fp32(A),
        act(B),
        act(C),
        fp32(D),
        act(z),
        fp32(delta_bias),
        bool(delta_softplus),
        bool(return_last_state),
        int(states_per_thread),
    )
    y = out[0] if out[0].dtype == u.dtype else out[0].to(u.dtype)
    return (y, out[1]) if return_last_state else y


def main(argv: list[str] | None = None) -> int:
    """``python -m m2s2l_edge.ops.cuda_backend build``: compile the extension now and report where it is."""
    parser = argparse.ArgumentParser(prog="python -m m2s2l_edge.ops.cuda_backend", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="compile the CUDA extension (needs nvcc and a CUDA build of PyTorch)")
    p_build.add_argument("-q", "--quiet", action="store_true", help="hide the compiler output")
    sub.add_parser("status", help="say whether the backend is available and why not")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.command == "status":
        if is_available():
            logger.info("CUDA selective-scan backend: available (%s)", build_directory())
            return 0
        logger.error("CUDA selective-scan backend: unavailable: %s", unavailable_reason())
        return 1
    try:
        ext = build(verbose=not args.quiet)
    except RuntimeError as exc:
        logger.error("%s", exc)
        return 1
    logger.info("built %s in %s (%s)", EXT_NAME, build_directory(), ext.__file__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
