"""The native ONNX Runtime op library for ``m2s2l.SelectiveScan``: ``csrc/scan_ort_op.cpp`` (ONNX Runtime's custom-op
API) and our CPU kernel ``csrc/scan_cpu.cpp`` compiled into one shared library, on first use like the CPU kernel.

Any ONNX Runtime host loads it: Python ``SessionOptions.register_custom_ops_library(path)``, C++
``Ort::SessionOptions::RegisterCustomOpsLibrary(path)``, Triton's onnxruntime backend (``model_operations
{ op_library_filename: "..." }``). It links no ONNX Runtime library (ONNX Runtime hands it its API when it
registers the op) and needs ONNX Runtime >= 1.17 at run time.

The build needs ONNX Runtime's C/C++ headers, which the onnxruntime pip wheel does not ship. They are looked for in
``$M2S2L_ORT_INCLUDE``, then in the cache folder ``plugins/fetch_ort_headers.sh`` fills
(``${M2S2L_CACHE_DIR:-~/.cache/m2s2l_edge}/onnxruntime/include``: Debian's libonnxruntime-dev headers, fetched
without installing anything), then in the system's ``/usr/include/onnxruntime`` and ``/usr/local/include/onnxruntime``
(``apt install libonnxruntime-dev`` on Debian 13, or an ONNX Runtime release archive's ``include/``). The C API is
versioned and append-only, so headers of any release from 1.17 on build a library that runs with newer runtimes.

The library is cached beside the CPU kernel, keyed by both sources, the headers, the compiler, the flags and the CPU.
Build ahead of time with ``m2s2l-edge plugin build`` or ``python -m m2s2l_edge.ops.ort_library build``.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from m2s2l_edge.ops.cpu_kernel import (
    _CXX_FLAGS,
    KernelBuildError,
    build_cached,
    build_hash,
    cache_root,
    compile_library,
    find_compiler,
)

_CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = (_CSRC / "scan_ort_op.cpp", _CSRC / "scan_cpu.cpp")
# Must equal what m2s2l_ort_op_abi_version() returns in scan_ort_op.cpp.
_ABI_VERSION = 1
BUILD_COMMAND = "m2s2l-edge plugin build --onnxruntime"
FETCH_COMMAND = "bash plugins/fetch_ort_headers.sh"
HEADER = "onnxruntime_c_api.h"
_SYSTEM_HEADER_DIRS = (Path("/usr/include/onnxruntime"), Path("/usr/local/include/onnxruntime"))


def fetched_header_dir() -> Path:
    """Where ``plugins/fetch_ort_headers.sh`` puts the headers."""
    return cache_root() / "onnxruntime" / "include"


def header_candidates() -> list[Path]:
    """The folders searched for ``onnxruntime_c_api.h``, in order."""
    env = os.environ.get("M2S2L_ORT_INCLUDE")
    return ([Path(env).expanduser()] if env else []) + [fetched_header_dir(), *_SYSTEM_HEADER_DIRS]


def find_headers() -> Path:
    """The folder holding ONNX Runtime's C/C++ headers; raises KernelBuildError saying how to get them."""
    env = os.environ.get("M2S2L_ORT_INCLUDE")
    if env and not (Path(env).expanduser() / HEADER).is_file():
        raise KernelBuildError(f"M2S2L_ORT_INCLUDE={env} holds no {HEADER}")
    for folder in header_candidates():
        if (folder / HEADER).is_file() and (folder / "onnxruntime_cxx_api.h").is_file():
            return folder
    raise KernelBuildError(
        f"ONNX Runtime's C++ headers were not found (the onnxruntime pip wheel has none; looked in "
        f"{', '.join(str(p) for p in header_candidates())}): run `{FETCH_COMMAND}` (Debian's libonnxruntime-dev "
        f"headers into the cache, nothing installed), or `apt install libonnxruntime-dev` (Debian 13), or set "
        f"M2S2L_ORT_INCLUDE to an ONNX Runtime release's include/ folder; then `{BUILD_COMMAND}`"
    )


def _compile_flags(include: Path) -> tuple[str, ...]:
    return (*_CXX_FLAGS, f"-I{include}")


def library_path(compiler: str | None = None, include: Path | None = None) -> Path:
    """The cached library's path for these sources, headers, compiler, flags and CPU (it may not exist yet)."""
    compiler = compiler or find_compiler()
    include = include or find_headers()
    missing = [s for s in SOURCES if not s.is_file()]
    if missing:
        raise KernelBuildError(f"{missing[0]} is missing from the installed package: reinstall m2s2l-edge")
    headers = hashlib.sha256()
    for name in sorted(p.name for p in include.glob("*.h")):
        headers.update(name.encode() + b"\0" + (include / name).read_bytes())
    parts = [*(s.read_bytes() for s in SOURCES), headers.digest(), " ".join(_CXX_FLAGS).encode()]
    return cache_root() / "scan_cpu" / f"libm2s2l_ort_ops-{build_hash(compiler, parts)}.so"


def build(force: bool = False) -> Path:
    """Compile the op library unless an up-to-date one is cached; returns its path. Raises KernelBuildError."""
    compiler = find_compiler()
    include = find_headers()
    target = library_path(compiler, include)
    return build_cached(
        target,
        lambda tmp: compile_library(compiler, list(SOURCES), tmp, _compile_flags(include), BUILD_COMMAND,
                                    "the ONNX Runtime SelectiveScan op library"),
        force,
    )


def check_library(path: Path) -> None:
    """Load ``path`` and check it is our op library of the expected ABI; raises KernelBuildError."""
    try:
        lib = ctypes.CDLL(str(path))
        version = lib.m2s2l_ort_op_abi_version
    except (OSError, AttributeError) as e:
        raise KernelBuildError(f"{path} is not a loadable m2s2l op library ({e}): rebuild with `{BUILD_COMMAND}`"
                               ) from None
    version.restype = ctypes.c_int
    if version() != _ABI_VERSION:
        raise KernelBuildError(f"{path} has ABI version {version()}, expected {_ABI_VERSION}: rebuild with "
                               f"`{BUILD_COMMAND}`")


@dataclass(frozen=True)
class _Library:
    path: Path | None
    reason: str  # why path is None; empty when built


@functools.lru_cache(maxsize=1)
def _library() -> _Library:
    try:
        path = build()
        check_library(path)
        return _Library(path, "")
    except KernelBuildError as e:
        return _Library(None, str(e))
    except Exception as e:  # noqa: BLE001 - is_available() must never raise; the reason is kept and reported
        return _Library(None, f"building the op library failed ({type(e).__name__}: {e}); try `{BUILD_COMMAND}`")


def is_available() -> bool:
    """Whether the op library can be used here (builds it on the first call; cached; never raises)."""
    return _library().path is not None


def unavailable_reason() -> str:
    """One line saying why ``is_available()`` is False and how to fix it; empty when it is True."""
    return _library().reason


def library() -> Path:
    """The built op library's path (building it on first use); raises RuntimeError saying why it is unavailable."""
    loaded = _library()
    if loaded.path is None:
        raise RuntimeError(f"the native ONNX Runtime SelectiveScan op is unavailable: {loaded.reason}")
    return loaded.path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m2s2l_edge.ops.ort_library",
                                     description="Build the ONNX Runtime SelectiveScan op library ahead of time.")
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="compile the op library into the cache and print its path")
    build_cmd.add_argument("--force", action="store_true", help="rebuild even if a cached library exists")
    args = parser.parse_args(argv)
    try:
        path = build(force=args.force)
        check_library(path)
    except KernelBuildError as e:
        if e.log:
            print(e.log, file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
