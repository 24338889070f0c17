"""What INT8 costs in accuracy: FP32 against INT8 (export --int8) of trained checkpoints on the validation builds.

For each checkpoint: export the plugin flavour in FP32 and in INT8 (calibrated on the training split of the first
build: normal footage only), then score every build's test videos with both in ONNX Runtime through ``evaluate``
(the eval command's path, with eval's default score for custom footage) and report the frame-level micro AUC of each,
its change, and how far the INT8 per-frame PSNRs and fused PSNR move from FP32's on the same frames.

    python benchmarks/bench_int8_accuracy.py --weights runs/s0/last.pt runs/s1/last.pt runs/s2/last.pt \\
        --builds data/vtest data/vtest1 --threads 1 --json benchmarks/results/int8_accuracy.json

Build 0 chose the recipe; build 1 (same frames, other anomalies) confirms. Nothing here is tuned on the test labels.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("bench_int8_accuracy")


def evaluate_model(path: Path, builds: list[str], threads: int) -> dict:
    from m2s2l_edge.config import default_score_name, get_score
    from m2s2l_edge.evaluation.datasets import load_footage
    from m2s2l_edge.evaluation.run import evaluate
    from m2s2l_edge.runtime import create_backend

    backend = create_backend("onnxruntime", path, threads=threads)
    score = get_score(default_score_name("custom"))
    out = {}
    for root in builds:
        # The validation builds keep their labels in frame_labels.npy at the root (vtest_validation.py).
        labels_file = Path(root) / "frame_labels.npy"
        videos, labels = load_footage(root, "custom", labels_path=labels_file if labels_file.is_file() else None)
        if labels is None:
            raise ValueError(f"{root} has no frame labels")
        result = evaluate(backend, videos, labels, score.lam, batch_size=1, score=score)
        out[root] = {"micro_auc": result.auc.micro, "macro_auc": result.auc.macro,
                     "psnr_app": np.concatenate([v.psnr_app for v in result.videos]),
                     "psnr_mot": np.concatenate([v.psnr_mot for v in result.videos]),
                     "fused": np.concatenate([v.fused for v in result.videos])}
    return out


def run(weights: list[str], builds: list[str], threads: int) -> dict:
    from m2s2l_edge.export.onnx_export import ExportConfig, export_onnx, load_source_model
    from m2s2l_edge.export.quantize import calibration_clips, export_int8

    rows = []
    for w in weights:
        model, source = load_source_model(w)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", ExportConfig(scan="plugin"), source=source)
            calibration = calibration_clips(builds[0], model.cfg.clip_len, model.cfg.image_size)
            int8, _, on_calibration = export_int8(model, Path(tmp) / "int8.onnx", ExportConfig(scan="plugin"),
                                                  calibration, source=source, check=False, threads=threads)
            export_s = time.perf_counter() - t0
            a, b = evaluate_model(fp32, builds, threads), evaluate_model(int8, builds, threads)
        per_build = {}
        for root in builds:
            d = {q: np.abs(b[root][q] - a[root][q]) for q in ("psnr_app", "psnr_mot", "fused")}
            per_build[root] = {
                "auc_fp32": a[root]["micro_auc"], "auc_int8": b[root]["micro_auc"],
                "auc_change": b[root]["micro_auc"] - a[root]["micro_auc"],
                **{f"{q}_change_db": {"mean": float(v.mean()), "max": float(v.max())} for q, v in d.items()},
            }
            logger.info("%s on %s: AUC fp32 %.4f int8 %.4f (%+.4f); fused PSNR moved %.3f dB mean, %.3f max", w,
                        root, a[root]["micro_auc"], b[root]["micro_auc"], per_build[root]["auc_change"],
                        d["fused"].mean(), d["fused"].max())
        rows.append({"weights": w, "export_and_calibration_s": export_s, "calibration": {
            "source": calibration.source, "sha256": calibration.sha256, "clips": int(len(calibration.clips))},
            "int8_vs_fp32_on_calibration_clips": on_calibration, "builds": per_build})
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", required=True)
    parser.add_argument("--builds", nargs="+", required=True, help="validation builds; the first calibrates")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from m2s2l_edge.efficiency.benchmarking import load_average, machine_info, write_json

    load_before = load_average()
    result = run(args.weights, args.builds, args.threads)
    result.update(load_average={"before": load_before, "after": load_average()}, machine=machine_info(),
                  date=time.strftime("%Y-%m-%d"), command=" ".join(sys.argv))
    print("| weights | build | AUC FP32 | AUC INT8 | change | fused PSNR moved (mean / max dB) |")
    print("|---|---|---:|---:|---:|---:|")
    for row in result["rows"]:
        for root, b in row["builds"].items():
            print(f"| {row['weights']} | {root} | {b['auc_fp32']:.4f} | {b['auc_int8']:.4f} | {b['auc_change']:+.4f} "
                  f"| {b['fused_change_db']['mean']:.3f} / {b['fused_change_db']['max']:.3f} |")
    if args.json is not None:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
