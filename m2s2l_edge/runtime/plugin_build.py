"""Building plugins/ (the SelectiveScan CUDA kernels and the TensorRT plugin libraries) with CMake: where the sources
are, which nvcc, the configure and build command lines, what the build leaves. `m2s2l-edge plugin build` runs them;
``tensorrt_lib.find_plugin_library`` finds what they built."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# The repository checkout this package runs from (editable install), whose plugins/ is built.
_REPO_ROOT = Path(__file__).resolve().parents[2]
# What the build leaves in the build folder (plugins/CMakeLists.txt).
LIBRARIES = ("libm2s2l_plugins.so", "libm2s2l_plugins_static.so", "libm2s2l_scan_kernels.a")
# Where JetPack and NVIDIA's installers put nvcc; it is not on PATH by default.
_NVCC_FALLBACK = Path("/usr/local/cuda/bin/nvcc")


def plugin_source_dir(cwd: Path | None = None) -> Path:
    """plugins/ of this checkout (editable install), else of the working folder."""
    for root in (_REPO_ROOT, cwd or Path.cwd()):
        if (root / "plugins" / "CMakeLists.txt").is_file():
            return root / "plugins"
    raise FileNotFoundError("plugins/CMakeLists.txt not found: run from the m2s2l-edge repository root")


def find_nvcc(env: dict | None = None) -> tuple[Path, bool]:
    """nvcc to use and whether CMake must be told (it finds nvcc on PATH or in $CUDACXX by itself)."""
    env = os.environ if env is None else env
    if env.get("CUDACXX"):
        return Path(env["CUDACXX"]), False
    on_path = shutil.which("nvcc")
    if on_path:
        return Path(on_path), False
    if _NVCC_FALLBACK.is_file():
        return _NVCC_FALLBACK, True
    raise RuntimeError("nvcc (CUDA toolkit) not found on PATH or in /usr/local/cuda/bin: install the CUDA toolkit "
                       "(JetPack: sudo apt install nvidia-jetpack) and add its bin/ folder to PATH")


def cmake_commands(
    source: Path,
    build_dir: Path,
    *,
    cmake: str = "cmake",
    nvcc: Path | None = None,
    tensorrt_root: Path | None = None,
    cuda_arch: str | None = None,
    kernels_only: bool = False,
    static_lib: bool = True,
    jobs: int | None = None,
) -> list[list[str]]:
    """The configure and build command lines (plugins/CMakeLists.txt documents the options)."""
    configure = [cmake, "-S", str(source), "-B", str(build_dir)]
    if nvcc is not None:
        configure.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
    if cuda_arch:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch}")
    # The switches are cache variables: always set, so that an earlier run's choice does not stick to this one.
    configure.append(f"-DM2S2L_BUILD_PLUGIN={'OFF' if kernels_only else 'ON'}")
    if not kernels_only:
        configure.append(f"-DM2S2L_BUILD_STATIC_PLUGIN_LIB={'ON' if static_lib else 'OFF'}")
        if tensorrt_root is not None:
            configure.append(f"-DTensorRT_ROOT={tensorrt_root}")
    build = [cmake, "--build", str(build_dir), "-j", str(jobs or os.cpu_count() or 1)]
    return [configure, build]
