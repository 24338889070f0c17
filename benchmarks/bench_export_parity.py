"""Export parity against the independent reference, per preset, weights, precision and ONNX flavour.

    python benchmarks/bench_export_parity.py --presets tiny small paper --json benchmarks/results/export_parity.json

What each figure compares: the exported ONNX file run in ONNX Runtime on the CPU (the plugin flavour's SelectiveScan
nodes computed by our C++ CPU kernel through onnxruntime-extensions' Python ops; the portable flavour's standard ONNX
``Scan``) against ``export.parity.reference_model``: the same weights in float64 with the pure-PyTorch scan. The
numbers are those of ``export.parity.check_parity`` (random and rendered clips, batch 1 and 3, the worst of
frame_pred, motion_pred, both PSNRs and the score; rel = max |onnx - reference| / max |reference|).

Two sets of weights per preset, both fresh from seed 0:
  - ``fresh``: as initialised. Its outputs hardly depend on the encoders (``scan_sensitivity`` below), so the
    figure mostly measures the decoders' last layers;
  - ``bn-stats``: the same weights with BatchNorm statistics measured on 4 random clips
    (``parity.with_batchnorm_statistics``), where the scans matter as they do in a trained model.
``scan_sensitivity``: the relative change of frame_pred in the float64 reference when all six scans output zero:
how much of the output a scan fault could move at all. Not a timing benchmark: no warm-up or median applies.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from m2s2l_edge.efficiency.benchmarking import load_average, machine_info


@contextlib.contextmanager
def _scans_output_zero():
    from m2s2l_edge.ops.kernels import KERNELS

    real = KERNELS["torch"]
    KERNELS["torch"] = lambda *args, **kwargs: torch.zeros_like(real(*args, **kwargs))
    try:
        yield
    finally:
        KERNELS["torch"] = real


def scan_sensitivity(model, clips: torch.Tensor) -> float:
    from m2s2l_edge.export.parity import reference_model

    ref = reference_model(model)
    with torch.inference_mode():
        want = ref.predict(clips.double())[0]
        with _scans_output_zero():
            zeroed = ref.predict(clips.double())[0]
    return float((want - zeroed).abs().max() / want.abs().max())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "small", "paper"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16"])
    p.add_argument("--flavours", nargs="+", default=["plugin", "portable"])
    p.add_argument("--weights", nargs="+", default=["fresh", "bn-stats"], choices=["fresh", "bn-stats"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from m2s2l_edge.export.onnx_export import ExportConfig, export_and_check, trace_onnx
    from m2s2l_edge.export.parity import check_parity, with_batchnorm_statistics
    from m2s2l_edge.models import create_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            fresh = create_model(preset, seed=0).eval()
            cfg = fresh.cfg
            clips = torch.rand(4, cfg.clip_len, 3, cfg.image_size, cfg.image_size,
                               generator=torch.Generator().manual_seed(1)) * 2 - 1
            for weights in args.weights:
                model = fresh if weights == "fresh" else with_batchnorm_statistics(fresh, clips)
                sensitivity = scan_sensitivity(model, clips[:1])
                for precision in args.precisions:
                    config = ExportConfig(precision=precision, dynamic_batch=True)
                    start = time.perf_counter()
                    traced = trace_onnx(model, config)
                    for flavour in args.flavours:
                        out = Path(tmp) / f"{preset}_{weights}_{precision}_{flavour}.onnx"
                        export_and_check(model, out, dataclasses.replace(config, scan=flavour), check=False,
                                         traced=traced)
                        report = check_parity(out, model, threads=args.threads)
                        worst = report.worst()
                        row = {"preset": preset, "weights": weights, "precision": precision, "flavour": flavour,
                               "onnx_scan": report.scan_backend, "reference": report.reference,
                               "passed": report.passed, "worst_quantity": worst.quantity,
                               "worst_inputs": worst.inputs, "worst_rel": worst.rel, "worst_max_abs": worst.max_abs,
                               "max_rel": max(r.rel for r in report.rows), "scan_sensitivity": sensitivity,
                               "seconds": time.perf_counter() - start, "loadavg": load_average()}
                        rows.append(row)
                        _write(args.json, rows)  # after every row: a paper-preset run takes long on a shared CPU
                        print(f"{preset:6s} {weights:8s} {precision} {flavour:8s} ({report.scan_backend}): "
                              f"max rel {row['max_rel']:.2e}, worst {worst.quantity} on {worst.inputs} rel "
                              f"{worst.rel:.2e} (abs {worst.max_abs:.2e}) {'ok' if report.passed else 'FAILED'}; "
                              f"scans-zeroed change {sensitivity:.1e}", flush=True)
                        out.unlink()
    _write(args.json, rows)
    return 0 if all(r["passed"] for r in rows) else 1


def _write(path: Path | None, rows: list[dict]) -> None:
    from m2s2l_edge.export.parity import REFERENCE
    from m2s2l_edge.io import atomic_write_text

    if path is None:
        return
    result = {"benchmark": "export_parity", "reference": REFERENCE, "rows": rows, "machine": machine_info(),
              "loadavg": load_average()}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
