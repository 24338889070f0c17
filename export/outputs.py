"""What an export writes and which export settings go together: the rules `m2s2l-edge export` and `build` apply
before the slow work, kept here so that a script calling the exporter gets the same names and the same refusals."""

from __future__ import annotations

import os
from pathlib import Path

# Here rather than in onnx_export (which imports torch), so that `build` on a TensorRT-only machine can use this
# module. The exporter writes ONNX; engine: the ONNX, then a TensorRT engine built from it.
FORMATS = ("onnx",)
OUTPUT_FORMATS = (*FORMATS, "engine")


def check_export_options(*, output_format: str, weights: Path | None, preset: str | None, plugin: Path | None,
                         int8: bool, calibration_data: Path | None, fp16: bool, check: bool = True,
                         report_wanted: bool = False) -> None:
    """ValueError for settings that do not go together, before anything is loaded. ``report_wanted``: the caller
    asked for the parity report (``--json``), which only a checked export (``check``) has."""
    check_output_format(output_format)
    if report_wanted and not check:
        raise ValueError("--json writes the parity report, which --no-check skips")
    if weights is None and preset is None:
        raise ValueError("give --weights CHECKPOINT (optionally with --preset to check it) or --preset NAME")
    if plugin is not None and output_format != "engine":
        raise ValueError("--plugin goes with --format engine")
    if int8 and calibration_data is None:
        raise ValueError("--int8 needs --calibration-data FOOTAGE: normal footage of the scene the model watches")
    if calibration_data is not None and not int8:
        raise ValueError("--calibration-data goes with --int8")
    # Quantization starts from the FP32 graph: Q/DQ around FP16 tensors would quantize twice.
    if int8 and fp16:
        raise ValueError("--int8 quantizes an FP32 export: drop --fp16")
    # The INT8 engine needs TensorRT's explicit-quantization build, which `build` runs on the Q/DQ ONNX.
    if int8 and output_format != "onnx":
        raise ValueError("--int8 writes an ONNX; build its engine with `m2s2l-edge build --onnx INT8.onnx`")
    if calibration_data is not None and not calibration_data.exists():
        raise FileNotFoundError(f"--calibration-data {calibration_data} does not exist")


def check_output_format(output_format: str) -> None:
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown format {output_format!r}; valid: {', '.join(OUTPUT_FORMATS)}")


def default_output(preset: str, scan: str, precision: str, batch: int, dynamic: bool) -> Path:
    """The export's name when --out is not given: every setting that changes the graph is in it, so two exports of
    one model with different settings never replace each other."""
    return Path(f"m2s2l_{preset}_{scan}_{precision}_{'dynamic' if dynamic else f'b{batch}'}.onnx")


def check_onnx_output(out: str | os.PathLike, label: str = "output path") -> Path:
    """``out`` as a Path, if it can name an exported ONNX: not a folder, a name ending in .onnx (``label`` names it
    in the error: the option or "output path")."""
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(f"{label} {out} is a folder; give a file name such as {out / 'model.onnx'}")
    if out.suffix != ".onnx":
        raise ValueError(f"{label} {out} must end in .onnx")
    return out


def export_paths(out: Path, output_format: str) -> tuple[Path, Path | None]:
    """(ONNX, engine or None) for ``out``: with --format engine ``out`` names the engine and the ONNX it is built
    from goes beside it (same stem), so the engine's metadata can point at its source. Otherwise ``out`` is the
    ONNX, a file ending in .onnx."""
    out = Path(out)
    if output_format != "engine":
        return check_onnx_output(out, "--out"), None
    if out.is_dir():
        raise IsADirectoryError(f"--out {out} is a folder; give a file name")
    if out.suffix != ".engine":
        raise ValueError(f"with --format engine, --out names the engine (*.engine), got {out}")
    return out.with_suffix(".onnx"), out


def written_files(onnx: Path, engine: Path | None = None) -> tuple[Path, ...]:
    """Every file an export to ``onnx`` (and a build of ``engine``) writes: the ONNX, its metadata sidecar and the
    engine, in that order; the caller checks each is writable before the slow work starts."""
    from m2s2l_edge.artifacts.metadata import sidecar_path

    return (Path(onnx), sidecar_path(onnx), *((Path(engine),) if engine is not None else ()))


def default_export_paths(model_name: str, output_format: str, *, scan: str, precision: str, batch: int,
                         dynamic: bool, int8: bool = False) -> tuple[Path, Path | None]:
    """:func:`export_paths` of the default name (known once the model, hence its preset name, is loaded). ``int8``:
    the name says int8 whatever ``precision`` the FP32 graph it quantizes has."""
    onnx = default_output(model_name, scan, "int8" if int8 else precision, batch, dynamic)
    return export_paths(onnx.with_suffix(".engine") if output_format == "engine" else onnx, output_format)


def default_engine_path(onnx: Path) -> Path:
    """`build`'s engine when --out is not given: beside the ONNX, same stem."""
    return Path(onnx).with_suffix(".engine")
