"""One export as `m2s2l-edge export` runs it: the FP32 / FP16 export or the INT8 one (an FP32 export quantized on
calibration footage), checked against PyTorch, and the record it leaves (``--json``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportResult:
    """What an export published: ``path`` (the ONNX; its metadata beside it), ``report`` (the parity report, None
    without a check) and, for INT8, ``comparison`` (``quantize.compare_with_fp32`` on the calibration clips)."""

    path: Path
    report: object | None = None
    comparison: dict | None = None

    def record(self) -> dict:
        """The ``--json`` record: the parity report, the file written and, for INT8, its agreement with FP32."""
        if self.report is None:
            raise ValueError("an unchecked export has no parity report")
        return {"passed": self.report.passed, **self.report.as_dict(), "written": str(self.path),
                **({"int8_vs_fp32": self.comparison} if self.comparison is not None else {})}


def failed_record(report) -> dict:
    """The ``--json`` record of an export whose parity check failed: nothing was written."""
    return {"passed": False, **report.as_dict(), "written": None}


def export_model(model, out: str | os.PathLike, config, *, calibration_data: str | os.PathLike | None = None,
                 source=None, dataset: str | None = None, lam: float | None = None, check: bool = True,
                 threads: int | None = None) -> ExportResult:
    """Export ``model`` to ``out`` with ``config`` (``onnx_export.ExportConfig``): quantized to INT8 on
    ``calibration_data`` (normal footage) when given, else in the config's precision. A failed parity check raises
    ``parity.ParityError`` and publishes nothing."""
    if calibration_data is None:
        from m2s2l_edge.export.onnx_export import export_and_check

        path, report = export_and_check(model, out, config, source=source, dataset=dataset, lam=lam, check=check,
                                        threads=threads)
        return ExportResult(path, report)
    from m2s2l_edge.export.quantize import calibration_clips, export_int8

    calibration = calibration_clips(calibration_data, model.cfg.clip_len, model.cfg.image_size)
    path, report, comparison = export_int8(model, out, config, calibration, source=source, dataset=dataset, lam=lam,
                                           check=check, threads=threads)
    return ExportResult(path, report, comparison)
