"""Real-footage validation on OpenCV's vtest.avi (source frames 0–479 only; 480+ are held out and never decoded).

Three steps, each a sub-command:

    # 1. build the set (MNAD layout for `--dataset custom`, frame_labels.npy, vtest_meta.json)
    python benchmarks/vtest_validation.py build --out data/vtest [--seed 0] [--overwrite]
    # 2. the model-free peers, scored like the model (per-video min-max, frame-level AUC), per kind
    python benchmarks/vtest_validation.py baselines --data data/vtest --json benchmarks/results/vtest_baselines.json
    # 3. per-kind AUC of any `m2s2l-edge eval` output folder on that set (reads its scores/ and results.json)
    m2s2l-edge train --data data/vtest --dataset custom --preset small --epochs 20 --out runs/vtest
    m2s2l-edge eval --data data/vtest --dataset custom --weights runs/vtest/last.pt \
        --labels data/vtest/frame_labels.npy --out runs/vtest_eval
    python benchmarks/vtest_validation.py score --data data/vtest --eval runs/vtest_eval --json out.json

Two more for understanding a checkpoint: `diagnose` (every score variant, and how close the predictions are to
copying the last frame) and `ablate` (one part of the model removed at test time: either stream, the decomposition,
the memory read-out or query, the encoder levels). `--seed 1` builds the confirmation set: the same source frames,
other anomalies.

The set, its anomaly kinds and why train and test stay disjoint are described in benchmarks/footage/vtest.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

# The kinds of the held-out set (too fast, foreign object, odd appearance, frozen camera): "all" without the
# time-reversed videos, which no detector here separates from normal footage (traffic runs both ways in vtest).
HELD_OUT_KINDS = ("fast", "foreign_object", "appearance", "frozen")


def _auc_table(names, labels, scores, kinds) -> dict:
    from footage.vtest import per_kind_auc

    from m2s2l_edge.evaluation.protocol import frame_auc

    table = per_kind_auc(names, labels, scores, kinds)
    keep = [i for i, n in enumerate(names) if kinds[n] in HELD_OUT_KINDS]
    table["four_kinds"] = frame_auc([labels[i] for i in keep], [scores[i] for i in keep]).micro
    return table


def _test_labels(data: Path, clip_len: int):
    from m2s2l_edge.evaluation.datasets import load_test_set
    from m2s2l_edge.evaluation.protocol import drop_unpredicted

    videos, labels = load_test_set(data, "custom", labels_path=data / "frame_labels.npy")
    return videos, drop_unpredicted(labels, clip_len)


def cmd_build(args) -> dict:
    from footage.vtest import VtestConfig, build_vtest_set, find_vtest

    video = args.video or find_vtest()
    if video is None:
        raise FileNotFoundError("vtest.avi not found; install it with: apt-get install -y opencv-doc")
    meta = build_vtest_set(video, args.out, VtestConfig(seed=args.seed), overwrite=args.overwrite)
    return {"out": str(args.out), "test_videos": len(meta["test_videos"]),
            "anomalous_frames": sum(v["anomalous_frames"] for v in meta["test_videos"])}


def cmd_baselines(args) -> dict:
    from footage.model_free import BASELINES, baseline_scores
    from footage.vtest import kinds_by_video, load_meta

    from m2s2l_edge.data import discover
    from m2s2l_edge.scoring.video import min_max, quantile_floor

    kinds = kinds_by_video(load_meta(args.data))
    videos, labels = _test_labels(args.data, args.clip_len)
    train = discover(args.data, "custom", "train")
    names = [v.name for v in videos]
    rows = {}
    for baseline in BASELINES:
        raw = baseline_scores(baseline, videos, args.clip_len, args.size, train_videos=train)
        rows[baseline] = _auc_table(names, labels, [min_max(r) for r in raw], kinds)
        for q in FLOOR_QUANTILES:  # the same normalisation the model scores get, for a like-for-like comparison
            rows[f"{baseline}+floor{q:g}"] = _auc_table(names, labels, [quantile_floor(min_max(r), q) for r in raw],
                                                        kinds)
    return {"size": args.size, "clip_len": args.clip_len, "auc": rows}


def cmd_score(args) -> dict:
    from footage.vtest import kinds_by_video, load_meta

    result = json.loads((args.eval / "results.json").read_text(encoding="utf-8"))
    kinds = kinds_by_video(load_meta(args.data))
    videos, labels = _test_labels(args.data, int(result["clip_len"]))
    files = {row["name"]: args.eval / row["scores_file"] for row in result["per_video"]}
    names = [v.name for v in videos]
    scores = [np.load(files[n]) for n in names]
    return {"eval": str(args.eval), "source": result.get("source"), "micro_auc_reported": result["micro_auc"],
            "auc": _auc_table(names, labels, scores, kinds)}


class CachedBackend:
    """A backend's outputs remembered per input batch, so score variants that need the same forward passes (one
    per patch size) run the model once."""

    def __init__(self, backend) -> None:
        self.backend, self.inputs, self.name = backend, backend.inputs, getattr(backend, "name", "model")
        self.cache: dict[bytes, dict] = {}

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        import hashlib

        key = hashlib.sha1(clips.tobytes()).digest()
        if key not in self.cache:
            self.cache[key] = {k: np.asarray(v).copy() for k, v in self.backend.run(clips).items()}
        return self.cache[key]


class CopyLastFrame:
    """The trivial predictor: next frame = last input frame, motion = 0. What a decoder that copies its full-
    resolution skip would score; the model's PSNRs are compared with it."""

    name = "copy_last_frame"

    def __init__(self, clip_len: int, size: int) -> None:
        from m2s2l_edge.runtime.base import TensorSpec

        self.inputs = (TensorSpec("clips", ("batch", clip_len, 3, size, size), "float32"),)

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        return {"frame_pred": clips[:, -1].copy(), "motion_pred": np.zeros_like(clips[:, -1])}


# Score variants compared by `diagnose` (all label-free; every one is chosen here, on this validation set).
PATCH_FRACTIONS = (1 / 16, 1 / 8, 1 / 4)
FLOOR_QUANTILES = (0.25, 0.5, 0.75)
MOTION_WEIGHTS = (0.25, 0.5)


def _variants(terms_by_patch: dict, lam: float) -> dict[str, tuple]:
    """name → (patch fraction whose terms it reads, ScoreConfig)."""
    from m2s2l_edge.config import ScoreConfig

    out = {"paper": (PATCH_FRACTIONS[1], ScoreConfig("paper", lam)),
           "paper_app_only": (PATCH_FRACTIONS[1], ScoreConfig("paper", 1.0)),
           "paper_motion_only": (PATCH_FRACTIONS[1], ScoreConfig("paper", 0.0)),
           "paper+stall": (PATCH_FRACTIONS[1], ScoreConfig("paper", lam, stall_ratio=0.1))}
    for f in terms_by_patch:
        for la in (lam, 1.0):
            tag = f"patch{f:.3f}" + ("" if la == lam else "_app_only")
            out[tag] = (f, ScoreConfig("patch", la, patch_fraction=f))
            out[f"{tag}+stall"] = (f, ScoreConfig("patch", la, patch_fraction=f, stall_ratio=0.1))
            for sigma in (2.0, 4.0):
                out[f"{tag}+stall+smooth{sigma:g}"] = (f, ScoreConfig("patch", la, patch_fraction=f,
                                                                      stall_ratio=0.1, smooth_sigma=sigma))
    for sigma in (2.0, 4.0):
        out[f"paper+stall+smooth{sigma:g}"] = (PATCH_FRACTIONS[1], ScoreConfig("paper", lam, stall_ratio=0.1,
                                                                               smooth_sigma=sigma))
    # The quantile floor on the published score and on the candidates that were best without it.
    fine = f"patch{PATCH_FRACTIONS[0]:.3f}"
    for base in ("paper", "paper+stall", "paper+stall+smooth2", f"{fine}_app_only+stall",
                 f"{fine}_app_only+stall+smooth2", f"{fine}+stall+smooth2"):
        if base in out:
            f, cfg = out[base]
            for q in FLOOR_QUANTILES:
                out[f"{base}+floor{q:g}"] = (f, cfg.replace(floor_quantile=q))
    # The two-sided motion term on top (ScoreConfig.motion_weight), with and without the floor.
    for base in list(out):
        if base.startswith((f"{fine}_app_only+stall+smooth2", "paper+stall+smooth2")):
            f, cfg = out[base]
            for w in MOTION_WEIGHTS:
                out[f"{base}+motion{w:g}"] = (f, cfg.replace(motion_weight=w))
    return out


def _motion_reference(torch_backend, data: Path, clip_len: int, size: int) -> float:
    """The motion term's reference: the one the checkpoint stored, else taken from the set's training frames the
    way `train` takes it (checkpoints written before train stored it)."""
    from m2s2l_edge.data import ClipDataset, discover
    from m2s2l_edge.scoring.terms import normal_change

    stored = torch_backend.metadata.get("normal_change")
    return stored if stored is not None else normal_change(ClipDataset(discover(data, "custom", "train"), clip_len,
                                                                       size))


def cmd_diagnose(args) -> dict:
    """Per-kind AUC of score variants for one checkpoint, and how close its predictions are to copying."""
    from footage.vtest import kinds_by_video, load_meta

    from m2s2l_edge.evaluation.run import frame_terms
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.runtime.base import backend_geometry
    from m2s2l_edge.scoring.video import video_scores

    kinds = kinds_by_video(load_meta(args.data))
    torch_backend = create_backend("torch", str(args.weights), threads=args.threads)
    model = CachedBackend(torch_backend)
    clip_len, size = backend_geometry(model)
    reference = _motion_reference(torch_backend, args.data, clip_len, size[0])
    videos, labels = _test_labels(args.data, clip_len)
    names = [v.name for v in videos]
    copy = CopyLastFrame(clip_len, size[0])
    terms = {f: [frame_terms(model, v, clip_len, size, 16, max(1, round(f * size[0]))) for v in videos]
             for f in PATCH_FRACTIONS}
    copy_terms = [frame_terms(copy, v, clip_len, size, 16, max(1, round(PATCH_FRACTIONS[1] * size[0])))
                  for v in videos]
    if args.terms is not None:
        arrays = {f"{n}/{f:.3f}/{k}": t[k] for f, ts in terms.items() for n, t in zip(names, ts, strict=True)
                  for k in t}
        arrays.update({f"{n}/copy/{k}": t[k] for n, t in zip(names, copy_terms, strict=True) for k in t})
        np.savez_compressed(args.terms, **arrays)
    table = {}
    for name, (f, cfg) in _variants(terms, args.lam).items():
        table[name] = _auc_table(names, labels, [video_scores(t, cfg, reference) for t in terms[f]], kinds)
    from m2s2l_edge.config import ScoreConfig

    table["copy_last_frame.paper"] = _auc_table(
        names, labels, [video_scores(t, ScoreConfig("paper", args.lam)) for t in copy_terms], kinds)
    mid = terms[PATCH_FRACTIONS[1]]
    model_app = np.concatenate([t["psnr_app"] for t in mid])
    copy_app = np.concatenate([t["psnr_app"] for t in copy_terms])
    copying = {
        "corr_psnr_app_model_vs_copy": float(np.corrcoef(model_app, copy_app)[0, 1]),
        "mean_psnr_app_model": float(model_app.mean()),
        "mean_psnr_app_copy": float(copy_app.mean()),
        "mean_psnr_mot_model": float(np.concatenate([t["psnr_mot"] for t in mid]).mean()),
    }
    return {"weights": str(args.weights), "image_size": list(size), "lambda": args.lam, "normal_change": reference,
            "copying": copying,
            "auc": table}


# Test-time interventions of `ablate`: each removes one part of a trained M²S²L's forward pass.
INTERVENTIONS = ("none", "spatial stream zeroed", "temporal stream zeroed", "decomposition: specific parts swapped",
                 "memory read-out zeroed", "memory query zeroed (read-out only)", "encoder levels zeroed")


class Intervened:
    """A trained M²S²L whose forward pass has one part removed (``mode``, one of :data:`INTERVENTIONS`), as a
    backend.

    The spatial stream is zeroed where it leaves the encoders (every encoder map, so both the fused features and
    the decoders' finer levels); the temporal stream before the fusion; the decomposition's appearance- and
    motion-specific parts trade places (what a decomposition that specialised nothing would not notice); the memory
    banks' output is [normalised query, read-out] (MNAD) or the read-out alone, and one half is zeroed in every bank;
    the encoder levels are the decoders' finer inputs. Interventions that do not apply to a model (the query of a
    model whose decoders get the read-out only) are skipped by ``applicable``."""

    def __init__(self, torch_backend) -> None:
        import torch

        self.inputs, self.name, self.mode = torch_backend.inputs, "intervened", "none"
        self.model = model = torch_backend.model
        if model.memories is None or model.decomposition is None:
            raise ValueError("ablate needs a model with memory banks and the decomposition (ablation M4)")
        banks = [*model.memories, *(model.level_memories or [])]

        def memory_hook(module, args, output):
            read, losses = output
            if not module.with_query:
                return (torch.zeros_like(read) if self.mode == "memory read-out zeroed" else read), losses
            dim = read.shape[1] // 2
            if self.mode == "memory read-out zeroed":
                read = torch.cat([read[:, :dim], torch.zeros_like(read[:, dim:])], dim=1)
            elif self.mode == "memory query zeroed (read-out only)":
                read = torch.cat([torch.zeros_like(read[:, :dim]), read[:, dim:]], dim=1)
            return read, losses

        def decomposition_hook(module, args, output):
            if self.mode == "decomposition: specific parts swapped":
                return output[0], output[2], output[1]
            return output

        for bank in banks:
            bank.register_forward_hook(memory_hook)
        model.decomposition.register_forward_hook(decomposition_hook)
        self.with_query = all(bank.with_query for bank in banks)
        temporal, maps, levels = model._temporal, model._spatial_maps, model._levels
        model._temporal = lambda clip: self._maybe_zero(temporal(clip), "temporal stream zeroed")
        model._spatial_maps = lambda stacked: [self._maybe_zero(f, "spatial stream zeroed") for f in maps(stacked)]
        model._levels = lambda m, out: [None if f is None else self._maybe_zero(f, "encoder levels zeroed")
                                        for f in levels(m, out)]

    def applicable(self, mode: str) -> bool:
        if mode == "memory query zeroed (read-out only)":
            return self.with_query
        if mode == "encoder levels zeroed":
            return bool(self.model.cfg.level_patch_sizes)
        return True

    def _maybe_zero(self, features, mode: str):
        return features * 0 if self.mode == mode else features

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            frame, motion = self.model.predict(torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32)))
        return {"frame_pred": frame.numpy(), "motion_pred": motion.numpy()}


def cmd_ablate(args) -> dict:
    """Frame PSNR on normal frames and the default score's AUC with each part of the model zeroed at test time."""
    from footage.vtest import kinds_by_video, load_meta

    from m2s2l_edge.config import get_score
    from m2s2l_edge.evaluation.run import frame_terms
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.runtime.base import backend_geometry
    from m2s2l_edge.scoring.video import video_scores

    kinds = kinds_by_video(load_meta(args.data))
    torch_backend = create_backend("torch", str(args.weights), threads=args.threads)
    model = Intervened(torch_backend)
    clip_len, size = backend_geometry(model)
    videos, labels = _test_labels(args.data, clip_len)
    names = [v.name for v in videos]
    score = get_score("patch")
    reference = _motion_reference(torch_backend, args.data, clip_len, size[0])
    rows = {}
    for mode in filter(model.applicable, INTERVENTIONS):
        model.mode = mode
        terms = [frame_terms(model, v, clip_len, size, 16, score.patch_size(size[0])) for v in videos]
        normal = np.concatenate([t["psnr_app"][lab == 0] for t, lab in zip(terms, labels, strict=True)])
        normal_mot = np.concatenate([t["psnr_mot"][lab == 0] for t, lab in zip(terms, labels, strict=True)])
        rows[mode] = {"psnr_app_normal_frames": float(normal.mean()),
                      "psnr_mot_normal_frames": float(normal_mot.mean()),
                      "auc": _auc_table(names, labels, [video_scores(t, score, reference) for t in terms], kinds)}
        logging.getLogger("vtest").info("%s: frame PSNR %.2f dB, AUC %.3f", mode, normal.mean(),
                                        rows[mode]["auc"]["all"])
    return {"weights": str(args.weights), "score": "patch", "interventions": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the validation set")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--video", type=Path, default=None, help="vtest.avi (default: opencv-doc's)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--overwrite", action="store_true")
    s = sub.add_parser("baselines", help="frame differencing and the two-sided motion statistic")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--size", type=int, default=64, help="resolution the baselines read frames at")
    s.add_argument("--clip-len", type=int, default=4, help="T: frames 0..T-1 of each video are not scored")
    e = sub.add_parser("score", help="per-kind AUC of an eval output folder")
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--eval", type=Path, required=True)
    d = sub.add_parser("diagnose", help="score variants and the copy-last-frame comparison for one checkpoint")
    d.add_argument("--data", type=Path, required=True)
    d.add_argument("--weights", type=Path, required=True)
    d.add_argument("--lam", type=float, default=0.5)
    d.add_argument("--threads", type=int, default=1)
    d.add_argument("--terms", type=Path, default=None, help="also save every per-frame term here (.npz)")
    a = sub.add_parser("ablate", help="zero one part of a trained model at test time: what carries the prediction")
    a.add_argument("--data", type=Path, required=True)
    a.add_argument("--weights", type=Path, required=True)
    a.add_argument("--threads", type=int, default=1)
    for p in (b, s, e, d, a):
        p.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        commands = {"build": cmd_build, "baselines": cmd_baselines, "score": cmd_score, "diagnose": cmd_diagnose,
                    "ablate": cmd_ablate}
        result = commands[args.command](args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from m2s2l_edge.efficiency.benchmarking import machine_info

    result = {"command": " ".join(sys.argv), **result, "machine": machine_info()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json is not None:
        from m2s2l_edge.io import atomic_write_text

        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
