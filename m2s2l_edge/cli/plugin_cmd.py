"""`m2s2l-edge plugin build`: configure and build plugins/ (CUDA kernels + TensorRT plugin libraries) with CMake;
`--onnxruntime` builds the ONNX Runtime SelectiveScan op library instead (``m2s2l_edge.ops.ort_library``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from m2s2l_edge.cli.errors import user_errors
from m2s2l_edge.runtime.plugin_build import LIBRARIES, cmake_commands, find_nvcc, plugin_source_dir

plugin_app = typer.Typer(help="The SelectiveScan CUDA kernels and TensorRT plugin (plugins/).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(plugin_app, name="plugin")


def _build_ort_library() -> None:
    from m2s2l_edge.ops import ort_library
    from m2s2l_edge.ops.cpu_kernel import KernelBuildError

    with user_errors():
        try:
            path = ort_library.build(force=True)
            ort_library.check_library(path)
        except KernelBuildError as e:
            if e.log:
                typer.echo(e.log, err=True)
            raise RuntimeError(str(e)) from None
    typer.echo(f"built {path}")
    typer.echo(f"register with SessionOptions.register_custom_ops_library({str(path)!r}); C++: "
               "Ort::SessionOptions::RegisterCustomOpsLibrary; Triton: model_operations { op_library_filename }")


@plugin_app.command("build")
def build(
    tensorrt_root: Annotated[Path | None, typer.Option(
        help="TensorRT tarball (include/, lib/); default: $TensorRT_ROOT or the system paths (JetPack).")] = None,
    cuda_arch: Annotated[str | None, typer.Option(
        "--arch", help="CMAKE_CUDA_ARCHITECTURES, e.g. 87 (Orin), 110 (Thor), 90 (H100); default 87-real;90.")] = None,
    kernels_only: Annotated[bool, typer.Option("--kernels-only", help="CUDA kernels only, no TensorRT.")] = False,
    static_lib: Annotated[bool, typer.Option(
        "--static/--no-static", help="Also build libm2s2l_plugins_static.so (links libnvinfer).")] = True,
    build_dir: Annotated[Path | None, typer.Option("--out", help="Build folder (default: plugins/build).")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Parallel compile jobs.")] = None,
    onnxruntime: Annotated[bool, typer.Option(
        "--onnxruntime", help="Build the ONNX Runtime SelectiveScan op library only (g++ and ONNX Runtime's headers: "
        "bash plugins/fetch_ort_headers.sh).")] = False,
) -> None:
    """Configure and build plugins/ with CMake; prints where the libraries are."""
    if onnxruntime:
        _build_ort_library()
        return
    with user_errors():
        cmake = shutil.which("cmake")
        if cmake is None:
            raise RuntimeError("cmake not found on PATH: sudo apt install cmake (or pip install cmake); needs >= 3.18")
        if tensorrt_root is not None and not tensorrt_root.is_dir():
            raise FileNotFoundError(f"--tensorrt-root {tensorrt_root} is not a folder")
        source = plugin_source_dir()
        build_dir = build_dir if build_dir is not None else source / "build"
        from m2s2l_edge.cli.options import check_output_dir

        check_output_dir(build_dir, overwrite=True)  # a build folder is reused (incremental builds)
        nvcc, tell_cmake = find_nvcc()
        commands = cmake_commands(
            source, build_dir, cmake=cmake, nvcc=nvcc if tell_cmake else None,
            tensorrt_root=tensorrt_root.resolve() if tensorrt_root else None, cuda_arch=cuda_arch,
            kernels_only=kernels_only, static_lib=static_lib, jobs=jobs,
        )
        for step, argv in zip(("configure", "build"), commands, strict=True):
            typer.echo("$ " + " ".join(argv), err=True)
            code = subprocess.run(argv, check=False).returncode
            if code != 0:
                raise RuntimeError(f"cmake {step} failed (exit {code}); its output above says why")
    built = [build_dir / name for name in LIBRARIES if (build_dir / name).is_file()]
    for path in built:
        typer.echo(f"built {path.resolve()}")
    if not kernels_only:
        typer.echo(f"load with --plugin {(build_dir / LIBRARIES[0]).resolve()} (or export M2S2L_PLUGIN_LIB=...)")
