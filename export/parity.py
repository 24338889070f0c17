"""Parity of an exported model with PyTorch, in ONNX Runtime on the CPU.

Both flavours are checked the same way: the ONNX file runs in ONNX Runtime (the plugin flavour's SelectiveScan nodes
in our native op library around our C++ CPU kernel, see ``m2s2l_edge.runtime.ort_session``), an independent
reference runs on the same clips, and the two outputs and the anomaly-score terms are compared. The reference
(``reference_model``) is a float64 copy of the PyTorch model on the CPU whose scans run the pure-PyTorch path (scan
backend "torch"): never the C++ kernel that computes the SelectiveScan nodes inside ONNX Runtime, so a fault in that
kernel cannot cancel out.

- inputs: random clips uniform in [-1, 1], and a "real" clip: consecutive frames of a rendered surveillance video
  (``m2s2l_edge.data.synthetic.render_video``; a smooth moving pattern where that module is absent);
- batch sizes: the exported one, or 1 and 3 for a dynamic batch (both through the same exported model);
- quantities: frame_pred, motion_pred, PSNR_app, PSNR_mot, their worst-window PSNRs and the fused score
  λ·PSNR_app + (1−λ)·PSNR_mot, computed by ``m2s2l_edge.scoring.terms.clip_terms`` (what eval and watch call), with
  the target the next frame (and next − last frame for the motion PSNR);
- error: max |onnx − torch| and the relative error max |onnx − torch| / max |torch| (normwise: an elementwise
  ratio is meaningless where an output crosses zero); a quantity passes when max |onnx − torch| <= atol +
  rtol · max |torch| (``TOLERANCES``: rtol 1e-4 for FP32, rtol 1e-2 + atol 1e-2 for FP16).

The reference is the float64 model for both precisions, so the FP32 figure is the export's own rounding and the FP16
bound measures what a deployment loses against what was trained (FP16 arithmetic everywhere except the scan state),
not FP16-vs-FP16 agreement.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# What is compared: the two outputs, then the per-frame terms the scores are made of (scoring.terms.clip_terms) and
# the published score's fused PSNR.
QUANTITIES = ("frame_pred", "motion_pred", "psnr_app", "psnr_mot", "patch_app", "patch_mot", "score")
# What the ONNX outputs are compared with (``reference_model``); reported with every parity figure.
REFERENCE = "PyTorch float64, pure-PyTorch scan ('torch')"


@dataclass(frozen=True)
class Tolerance:
    """A quantity passes when max |onnx - torch| <= atol + rtol · max |torch| (numpy's allclose, normwise)."""

    rtol: float
    atol: float = 0.0

    def allowed(self, scale: float) -> float:
        return self.atol + self.rtol * scale


# FP32: purely relative. FP32 exports measured 6e-7 to 3e-5 of each quantity's largest value, so 1e-4 leaves room
# for a kernel's summation order, and with no absolute floor a quantity that stays small (motion_pred on a still
# scene) cannot hide a real error. FP16: the worst measured error was 5.5e-3 absolute
# on motion_pred (a [-2, 2] quantity whose values reached only 0.19 on a near-static rendered scene, so 2.9e-2
# relative) with a trained small checkpoint, 5.3e-4 relative with fresh weights (tiny, small, paper); the score moved
# by 3.5e-3 dB at most. The absolute term (1e-2 = 1.3 grey levels of an 8-bit frame in [-1, 1]) keeps near-zero
# outputs from failing on FP16 rounding alone; see export/README.md.
TOLERANCES = {"fp32": Tolerance(rtol=1e-4), "fp16": Tolerance(rtol=1e-2, atol=1e-2)}


@dataclass(frozen=True)
class ParityRow:
    inputs: str  # "random" | "synthetic"
    batch: int
    quantity: str  # one of QUANTITIES
    max_abs: float  # max |onnx - torch|
    rel: float  # max_abs / max |torch|
    allowed: float  # the bound on max_abs: atol + rtol · max |torch|

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.allowed

    def as_dict(self) -> dict:
        return {"inputs": self.inputs, "batch": self.batch, "quantity": self.quantity, "max_abs": self.max_abs,
                "rel": self.rel, "allowed": self.allowed, "ok": self.ok}


@dataclass
class ParityReport:
    model: str
    scan: str
    precision: str
    scan_backend: str  # what computed the SelectiveScan nodes (plugin flavour) or "onnx Scan" (portable)
    tolerance: Tolerance
    reference: str = REFERENCE
    rows: list[ParityRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.rows)

    def worst(self) -> ParityRow:
        def badness(r: ParityRow) -> float:
            if not np.isfinite(r.max_abs):
                return np.inf
            return r.max_abs / r.allowed if r.allowed > 0 else (np.inf if r.max_abs > 0 else 0.0)

        return max(self.rows, key=badness)

    def summary(self) -> str:
        w = self.worst()
        verdict = "passed" if self.passed else "FAILED"
        tol = self.tolerance
        bound = f"rtol {tol.rtol:g}" + (f", atol {tol.atol:g}" if tol.atol else "")
        return (f"parity {verdict} ({self.precision}, {self.scan} vs {self.reference}): "
                f"worst {w.quantity} on {w.inputs} batch {w.batch}: "
                f"max abs {w.max_abs:.3g} (allowed {w.allowed:.3g}), rel {w.rel:.3g} ({bound})")

    def as_dict(self) -> dict:
        return {"model": self.model, "scan": self.scan, "precision": self.precision, "scan_backend": self.scan_backend,
                "reference": self.reference, "rtol": self.tolerance.rtol, "atol": self.tolerance.atol,
                "passed": self.passed,
                "rows": [r.as_dict() for r in self.rows]}


class ParityError(RuntimeError):
    """An export that does not match PyTorch within its precision's bound; ``report`` holds the numbers."""

    def __init__(self, report: ParityReport) -> None:
        super().__init__(report.summary())
        self.report = report


def _error(got: np.ndarray, want: np.ndarray) -> tuple[float, float, float]:
    """(max |got - want|, that / max |want|, max |want|); inf when ``got`` holds a NaN or inf."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = float(np.max(np.abs(want)))
    if not np.all(np.isfinite(got)):
        return float("inf"), float("inf"), scale
    max_abs = float(np.max(np.abs(got - want)))
    return max_abs, max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf")), scale


def synthetic_frames(size: int, frames: int, seed: int = 0) -> np.ndarray:
    """(frames, 3, size, size) float32 in [-1, 1]: a rendered surveillance video, or a smooth moving pattern."""
    try:
        from m2s2l_edge.data.synthetic import render_video
    except ImportError:
        render_video = None
    if render_video is not None and size >= 32:
        video = render_video(size=size, frames=frames, seed=seed).frames  # (N, H, W, 3) uint8 RGB
        return (video.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2).copy()
    # Two drifting sinusoidal gratings and a moving Gaussian blob: smooth, coloured, with real motion between frames.
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((frames, 3, size, size), np.float32)
    for t in range(frames):
        blob = np.exp(-((x - 0.2 - 0.05 * t) ** 2 + (y - 0.5) ** 2) / 0.01)
        for c in range(3):
            out[t, c] = 0.5 * np.sin(2 * np.pi * (3 * x + 2 * y + 0.07 * t + c / 3)) + 0.4 * blob
    return np.clip(out, -1, 1)


def _inputs(kind: str, batch: int, clip_len: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """clips (B, T, 3, H, W) and targets (B, 3, H, W)."""
    if kind == "random":
        seq = rng.uniform(-1, 1, (batch, clip_len + 1, 3, size, size)).astype(np.float32)
    else:
        frames = synthetic_frames(size, clip_len + batch)
        seq = np.stack([frames[i:i + clip_len + 1] for i in range(batch)])  # sliding windows over one video
    return np.ascontiguousarray(seq[:, :clip_len]), np.ascontiguousarray(seq[:, clip_len])


def _scores(frame_pred, motion_pred, clips, targets, scoring) -> dict[str, np.ndarray]:
    """The score terms parity compares, by the one function every path computes them with."""
    from m2s2l_edge.scoring.terms import clip_terms
    from m2s2l_edge.scoring.video import score_fused

    terms = clip_terms(clips, targets, frame_pred, motion_pred, scoring.patch).terms
    return {**{k: terms[k] for k in ("psnr_app", "psnr_mot", "patch_app", "patch_mot")},
            "score": score_fused(terms, scoring.score)}


def reference_model(model):
    """The parity reference for ``model`` (M2S2L): a float64 copy on the CPU, in eval mode, built with scan backend
    "torch" (the pure-PyTorch scan), so that nothing it computes goes through the C++ or CUDA kernels that the
    exported graph's SelectiveScan nodes run on. The original model is not changed."""
    import torch

    from m2s2l_edge.models.m2s2l import M2S2L

    ref = M2S2L(model.cfg.replace(scan_backend="torch"))
    state = {name: value.detach().to("cpu", torch.float64) if value.is_floating_point() else value.detach().cpu()
             for name, value in model.state_dict().items()}
    ref.load_state_dict(state)
    return ref.to(torch.float64).eval()


def with_batchnorm_statistics(model, clips):
    """A copy of ``model`` whose BatchNorm running statistics are those of ``clips`` (B, T, 3, H, W), in eval mode.

    Why: in a freshly initialised M2S2L the decoders' bias-free convolutions shrink the fused features layer by layer
    while BatchNorm still holds its initial statistics (mean 0, variance 1), so the outputs hardly depend on the
    encoders (zeroing all six scans moves the tiny preset's outputs by 2e-7 relative). A parity check of such a model
    says little about the scans; with statistics measured on data every stage is normalised and the scans matter as
    they do in a trained model. Checks and benchmarks use this; exports keep the weights they are given.
    """
    import copy

    import torch

    out = copy.deepcopy(model)
    for module in out.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    out.train()
    with torch.no_grad():
        out.predict(clips)
    return out.eval()


def check_parity(
    onnx_path: str | os.PathLike,
    model,
    *,
    threads: int | None = None,
    seed: int = 0,
    batches: tuple[int, ...] | None = None,
    tolerance: Tolerance | None = None,
    scan_op: str = "auto",
) -> ParityReport:
    """Compare the ONNX model at ``onnx_path`` in ONNX Runtime with ``reference_model(model)`` (float64, scan "torch").

    ``batches`` defaults to the export's batch (1 and 3 for a dynamic one); ``tolerance`` to ``TOLERANCES`` for the
    export's precision; ``scan_op`` which op computes a plugin-flavour model's SelectiveScan nodes
    (``m2s2l_edge.runtime.ort_session``). The report says whether every quantity is within the bound; this function
    does not raise on a failed comparison (``export_and_check`` does).
    """
    import torch

    from m2s2l_edge.runtime.ort_session import open_session

    # Opened as the runtime's ONNX Runtime backend opens it (one session code, m2s2l_edge.runtime.ort_session).
    opened = open_session(onnx_path, threads=threads, scan_op=scan_op)
    session, meta = opened.session, opened.meta
    (clip_input,) = session.get_inputs()
    output_names = [o.name for o in session.get_outputs()]

    def run_onnx(clips: np.ndarray) -> dict[str, np.ndarray]:
        values = session.run(output_names, {clip_input.name: clips})
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(output_names, values, strict=True)}

    tol = tolerance or TOLERANCES[meta.precision]
    if batches is None:
        batches = (1, 3) if meta.batch == "dynamic" else (int(meta.batch),)
    cfg = model.cfg
    report = ParityReport(str(Path(onnx_path).name), meta.scan, meta.precision,
                          opened.scan_path.removeprefix("SelectiveScan: ") if meta.scan == "plugin" else "onnx Scan",
                          tol)
    from m2s2l_edge.scoring.model import model_scoring

    # The published score with the λ the export records: what a deployment's paper score fuses.
    scoring = model_scoring(meta.to_dict(), (cfg.clip_len, (cfg.image_size, cfg.image_size)), score="paper")
    rng = np.random.default_rng(seed)
    reference = reference_model(model)
    for kind in ("random", "synthetic"):
        for batch in batches:
            clips, targets = _inputs(kind, batch, cfg.clip_len, cfg.image_size, rng)
            with torch.inference_mode():
                ref = reference.predict(torch.from_numpy(clips).to(torch.float64))
            want = {"frame_pred": ref[0].numpy(), "motion_pred": ref[1].numpy()}
            got = run_onnx(clips)
            want.update(_scores(want["frame_pred"], want["motion_pred"], clips, targets, scoring))
            got.update(_scores(got["frame_pred"], got["motion_pred"], clips, targets, scoring))
            for quantity in QUANTITIES:
                max_abs, rel, scale = _error(got[quantity], want[quantity])
                report.rows.append(ParityRow(kind, batch, quantity, max_abs, rel, tol.allowed(scale)))
    logger.info("%s", report.summary())
    return report
