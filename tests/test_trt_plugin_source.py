"""The TensorRT plugin's C++ source and build, checked without TensorRT.

(a) The plugin's name, version, namespace, fields and input order agree with ``m2s2l_edge.ops.spec`` and come from
    ``scanSpec.h``'s constants, not from string literals.
(b) Against each TensorRT header set (10.3.0, 10.13.3, 11.1) in ``third_party/tensorrt-*/include``
    (``plugins/fetch_trt_headers.sh``) or in ``../shared/third_party/tensorrt-*/include`` beside the clone (present for
    every developer and in CI), the plugin compiles with -Werror and a harness drives it through the plugin
    interfaces with a recording stand-in for the CUDA launcher. Skipped only where neither place has headers.
(c) CMake: the TensorRT-free kernel library builds (``M2S2L_BUILD_PLUGIN=OFF``); with headers, a missing libnvinfer is
    one clear configuration error, and with a stand-in libnvinfer both plugin libraries build, export only their
    entry points, and register the creator under the right namespace when loaded.

Building ONNX graphs that use the node, and running TensorRT itself, belong to other tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from m2s2l_edge.ops import spec

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
SCAN_DIR = PLUGINS / "selective_scan"
SPEC_HEADER = SCAN_DIR / "scanSpec.h"
PLUGIN_SOURCES = ("selectiveScanPlugin.h", "selectiveScanPlugin.cpp", "pluginEntry.cpp", "pluginStaticRegistration.cpp")


def _main_checkout(repo: Path) -> Path | None:
    """For a git worktree (``.git`` is a file), the checkout that owns the repository; else None."""
    dot_git = repo / ".git"
    if not dot_git.is_file():
        return None
    text = dot_git.read_text().strip()
    if not text.startswith("gitdir:"):
        return None
    gitdir = (repo / text.removeprefix("gitdir:").strip()).resolve()
    common = gitdir / "commondir"
    common_dir = (gitdir / common.read_text().strip()).resolve() if common.is_file() else gitdir
    return common_dir.parent


def trt_include_dirs(repo: Path = REPO) -> list[Path]:
    """One include/ per TensorRT version: the checkout's own third_party/ first, then ../shared/third_party beside
    the clone (for a worktree, also beside the checkout it belongs to). Same search as plugins/check_compile.sh."""
    roots = [repo / "third_party", repo.parent / "shared" / "third_party"]
    main = _main_checkout(repo)
    if main is not None:
        roots.append(main.parent / "shared" / "third_party")
    found: dict[str, Path] = {}
    for root in roots:
        for include in sorted(root.glob("tensorrt-*/include")):
            if (include / "NvInferRuntime.h").is_file():
                found.setdefault(include.parent.name, include.resolve())
    return [found[name] for name in sorted(found)]


TRT_INCLUDE_DIRS = trt_include_dirs()
CMAKE_ARCH = "90"  # one architecture keeps the CMake tests short


def _strip_comments(code: str) -> str:
    code = re.sub(r"/\*.*?\*/", "", code, flags=re.S)
    return re.sub(r"//[^\n]*", "", code)


def _string_literals(code: str) -> list[str]:
    return re.findall(r'"((?:[^"\\\n]|\\.)*)"', _strip_comments(code))


def _header_constants() -> dict[str, object]:
    text = _strip_comments(SPEC_HEADER.read_text())
    scalars = dict(re.findall(r"constexpr\s+char\s+const\s*\*\s+(k\w+)\s*=\s*\"([^\"]*)\"\s*;", text))
    ints = {k: int(v) for k, v in re.findall(r"constexpr\s+int\s+(k\w+)\s*=\s*(\d+)\s*;", text)}
    arrays = {
        name: tuple(re.findall(r'"([^"]*)"', body))
        for name, body in re.findall(r"constexpr\s+char\s+const\s*\*\s+(k\w+)\[\]\s*=\s*\{([^}]*)\}\s*;", text)
    }
    return {**scalars, **ints, **arrays}


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _cuda_home() -> Path | None:
    """The CUDA toolkit nvcc belongs to (nvcc may be a wrapper script), or None."""
    if shutil.which("nvcc") is None:
        return None
    out = _run(["nvcc", "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull], timeout=60)
    match = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, flags=re.M)
    if match is None:
        return None
    top = Path(match.group(1).strip()).resolve()
    return top if (top / "include" / "cuda_runtime_api.h").is_file() else None


# --- (a) identity and fields ------------------------------------------------------------------------------------


def test_scan_spec_header_matches_python_spec():
    c = _header_constants()
    assert c["kSCAN_OP_NAME"] == spec.OP_NAME
    assert c["kSCAN_PLUGIN_VERSION"] == spec.PLUGIN_VERSION
    assert c["kSCAN_PLUGIN_NAMESPACE"] == spec.PLUGIN_NAMESPACE
    assert c["kSCAN_ONNX_DOMAIN"] == spec.ONNX_DOMAIN
    assert c["kSCAN_PLUGIN_FIELDS"] == tuple(spec.PLUGIN_FIELDS)
    assert c["kSCAN_NUM_PLUGIN_FIELDS"] == len(spec.PLUGIN_FIELDS)
    assert c["kSCAN_NUM_INPUTS_WITH_Z"] == len(spec.INPUT_NAMES)
    assert c["kSCAN_NUM_INPUTS_NO_Z"] == len(spec.INPUT_NAMES) - 1 and spec.INPUT_NAMES[-1] == "z"


def test_plugin_identity_comes_from_spec_constants_not_literals():
    code = {name: (SCAN_DIR / name).read_text() for name in PLUGIN_SOURCES}
    plugin = _strip_comments(code["selectiveScanPlugin.cpp"])
    # Both the plugin (IPluginV3OneCore) and its creator return the shared constants.
    for constant in ("kSCAN_OP_NAME", "kSCAN_PLUGIN_VERSION", "kSCAN_PLUGIN_NAMESPACE"):
        assert len(re.findall(rf"return\s+{constant}\s*;", plugin)) == 2, constant
    assert "kSCAN_PLUGIN_FIELDS[0]" in plugin
    forbidden = {spec.OP_NAME, spec.PLUGIN_NAMESPACE, *spec.PLUGIN_FIELDS}
    for name, text in code.items():
        literals = set(_string_literals(text))
        assert not literals & forbidden, f"{name} spells {literals & forbidden} as literals; use scanSpec.h"


def test_plugin_input_order_matches_spec():
    plugin = _strip_comments((SCAN_DIR / "selectiveScanPlugin.cpp").read_text())
    table = re.search(r"kNAMES\[\]\s*=\s*\{([^}]*)\}", plugin)
    assert table is not None
    assert tuple(re.findall(r'"([^"]*)"', table.group(1))) == tuple(spec.INPUT_NAMES)
    positions = dict(re.findall(r"constexpr\s+int32_t\s+kIN_(\w+)\s*=\s*(\d+)\s*;", plugin))
    assert {k.lower(): int(v) for k, v in positions.items()} == {n.lower(): i for i, n in enumerate(spec.INPUT_NAMES)}


def test_library_entry_points():
    entry = _strip_comments((SCAN_DIR / "pluginEntry.cpp").read_text())
    exported = r'extern\s+"C"\s+M2S2L_PLUGIN_EXPORT\s+'
    assert re.search(exported + r"void\s+setLoggerFinder\(\s*nvinfer1::ILoggerFinder\*", entry)
    assert re.search(exported + r"nvinfer1::IPluginCreatorInterface\*\s+const\*\s+getCreators\(\s*int32_t&", entry)
    static = _strip_comments((SCAN_DIR / "pluginStaticRegistration.cpp").read_text())
    assert "registerCreator(sCreator, kSCAN_PLUGIN_NAMESPACE)" in static
    # One library, one registration path: loadLibrary() refuses creators that registered themselves on load.
    assert "getCreators" not in static and "registerCreator" not in entry


# --- (b) compile against TensorRT's public headers ------------------------------------------------------------

needs_headers = pytest.mark.skipif(
    not TRT_INCLUDE_DIRS,
    reason="no TensorRT headers in third_party/ or ../shared/third_party/ (run plugins/fetch_trt_headers.sh)",
)
header_sets = pytest.mark.parametrize(
    "trt_include", TRT_INCLUDE_DIRS or [None], ids=lambda p: p.parent.name if p else "no-headers"
)


@needs_headers
@header_sets
def test_plugin_compiles_with_werror(trt_include: Path):
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler")
    if _cuda_home() is None and not Path("/usr/local/cuda/include/cuda_runtime_api.h").is_file():
        pytest.skip("no CUDA headers (cuda_runtime_api.h)")
    out = _run(["bash", str(PLUGINS / "check_compile.sh"), str(trt_include)])
    assert out.returncode == 0, out.stdout + out.stderr


@needs_headers
@header_sets
def test_plugin_harness(trt_include: Path, tmp_path: Path):
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    cuda = _cuda_home()
    if cxx is None or cuda is None:
        pytest.skip("needs a C++ compiler and the CUDA toolkit (nvcc on PATH)")
    exe = tmp_path / "harness"
    flags = [
        "-std=c++17",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-isystem",
        str(trt_include),
        "-isystem",
        str(cuda / "include"),
    ]
    sources = [
        REPO / "tests" / "trt_plugin_harness.cpp",
        SCAN_DIR / "selectiveScanPlugin.cpp",
        SCAN_DIR / "pluginEntry.cpp",
    ]
    libs = ["-L", str(cuda / "lib64"), "-lcudart_static", "-ldl", "-lpthread", "-lrt"]
    build = _run([cxx, *flags, "-I", str(SCAN_DIR), *map(str, sources), *libs, "-o", str(exe)])
    assert build.returncode == 0, build.stderr
    run = _run([str(exe)], timeout=60)
    assert run.returncode == 0 and run.stdout.strip().endswith("PASS"), run.stdout + run.stderr


# --- (c) CMake ---------------------------------------------------------------------------------------------------

needs_cmake_cuda = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("nvcc") is None, reason="needs cmake and nvcc"
)


def _configure(build: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(["cmake", "-S", str(PLUGINS), "-B", str(build), f"-DCMAKE_CUDA_ARCHITECTURES={CMAKE_ARCH}", *args])


def _build(build: Path) -> subprocess.CompletedProcess[str]:
    return _run(["cmake", "--build", str(build), "-j", "2"], timeout=600)


@pytest.mark.slow
@needs_cmake_cuda
def test_cmake_builds_kernels_without_tensorrt(tmp_path: Path):
    build = tmp_path / "build"
    out = _configure(build, "-DM2S2L_BUILD_PLUGIN=OFF")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "building the kernels only" in out.stdout
    out = _build(build)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (build / "libm2s2l_scan_kernels.a").is_file()


@pytest.mark.slow
@needs_cmake_cuda
@needs_headers
def test_cmake_missing_libnvinfer_is_one_clear_line(tmp_path: Path):
    trt_root = TRT_INCLUDE_DIRS[0].parent  # headers, no lib/
    out = _configure(tmp_path / "build", f"-DTensorRT_ROOT={trt_root}")
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if "libnvinfer.so not found" in line]
    assert len(lines) == 1, out.stderr
    assert str(trt_root) in lines[0] and "-DM2S2L_BUILD_STATIC_PLUGIN_LIB=OFF" in lines[0]


@pytest.mark.slow
@needs_cmake_cuda
@needs_headers
def test_cmake_plugin_libraries_build_export_and_register(tmp_path: Path):
    """Both plugin libraries against a tarball-shaped TensorRT_ROOT whose libnvinfer.so is a recording stand-in."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    cuda = _cuda_home()
    if cxx is None or cuda is None:
        pytest.skip("needs a C++ compiler and the CUDA toolkit")
    include = next((p for p in TRT_INCLUDE_DIRS if p.parent.name.startswith("tensorrt-10.3")), TRT_INCLUDE_DIRS[0])
    trt_root = tmp_path / "TensorRT"
    (trt_root / "lib").mkdir(parents=True)
    (trt_root / "include").symlink_to(include)
    fake = trt_root / "lib" / "libnvinfer.so"
    flags = ["-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden", "-w", "-isystem", str(include)]
    out = _run(
        [cxx, *flags, "-isystem", str(cuda / "include"), str(REPO / "tests" / "trt_fake_nvinfer.cpp"), "-o", str(fake)]
    )
    assert out.returncode == 0, out.stderr

    build = tmp_path / "build"
    out = _configure(build, f"-DTensorRT_ROOT={trt_root}", "-DM2S2L_WERROR=ON")
    assert out.returncode == 0, out.stdout + out.stderr
    out = _build(build)
    assert out.returncode == 0, out.stdout + out.stderr
    dynamic, static = build / "libm2s2l_plugins.so", build / "libm2s2l_plugins_static.so"
    assert dynamic.is_file() and static.is_file()

    if shutil.which("nm") is not None:
        exported = set()
        for line in _run(["nm", "-D", "--defined-only", str(dynamic)]).stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TDBR":  # skip libstdc++'s unique ('u') template statics
                exported.add(parts[2])
        assert exported == {"getCreators", "setLoggerFinder"}
    if shutil.which("readelf") is not None:
        needed = _run(["readelf", "-d", str(dynamic)]).stdout
        assert "libnvinfer" not in needed and "libcudart" not in needed, needed
        assert "libnvinfer" in _run(["readelf", "-d", str(static)]).stdout

    # Load both in a child process: getCreators() answers one creator, and loading the static flavour registers it.
    probe = f"""
import ctypes, os
fake = ctypes.CDLL({str(fake)!r}, mode=os.RTLD_NOW | ctypes.RTLD_GLOBAL)
fake.fakeRegisteredCreators.restype = ctypes.c_char_p
assert fake.fakeRegisteredCreators() == b""
ctypes.CDLL({str(static)!r}, mode=os.RTLD_NOW)
print(fake.fakeRegisteredCreators().decode())
lib = ctypes.CDLL({str(dynamic)!r}, mode=os.RTLD_NOW)
lib.getCreators.restype = ctypes.c_void_p
n = ctypes.c_int32(-1)
assert lib.getCreators(ctypes.byref(n)) and n.value == 1, n.value
lib.setLoggerFinder(None)
"""
    out = _run([sys.executable, "-c", probe], timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    ns = spec.PLUGIN_NAMESPACE
    assert out.stdout.strip() == f"{spec.OP_NAME}|{spec.PLUGIN_VERSION}|{ns}|{ns};"
