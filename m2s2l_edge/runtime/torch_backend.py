"""The PyTorch model behind the runtime interface: from a checkpoint, or a preset with fresh (seeded) weights."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from m2s2l_edge.runtime.base import TensorSpec
from m2s2l_edge.runtime.batching import check_clips

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16")


class TorchBackend:
    """Eager PyTorch inference. Shapes: clips (B, T, 3, H, W) float32 in [-1, 1] → frame_pred, motion_pred
    (B, 3, H, W) float32.

    ``threads`` sets PyTorch's intra-op thread count, which is process-wide (``torch.set_num_threads``).
    ``precision="fp16"`` runs the model in half precision (CUDA only: PyTorch's CPU half kernels are slow and not
    what any deployment uses); the scan keeps float32 state either way. ``optimize`` (default) runs a copy of the
    model with its BatchNorm folded and its multi-scale convolutions merged (``optimize_for_inference``: same
    outputs up to FP rounding, fewer kernels per forward); ``self.model`` stays the loaded model, so it can still
    be saved as a checkpoint.
    """

    name = "torch"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        preset: str | None = None,
        seed: int = 0,
        device: str = "cpu",
        threads: int | None = None,
        precision: str = "fp32",
        scan_backend: str = "auto",
        dataset: str | None = None,
        lam: float | None = None,
        optimize: bool = True,
    ) -> None:
        import copy

        import torch

        from m2s2l_edge.artifacts.metadata import ExportMetadata, library_versions
        from m2s2l_edge.models.fold import inference_rewrites
        from m2s2l_edge.ops.dispatch import resolve_backend
        from m2s2l_edge.scoring.model import resolve_lambda, stored_number

        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r}: no CUDA device is visible to PyTorch")
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}; valid: cpu, cuda[:N]")
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device for the torch backend (use fp32 on the CPU)")
        if threads is not None:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        if path is not None:
            from m2s2l_edge.artifacts.checkpoint import load_model

            model, state = load_model(path, expected_preset=preset, scan_backend=scan_backend)
            ckpt_dataset = (state.get("extra") or {}).get("dataset")
            stored_lam = (state.get("extra") or {}).get("lambda")
            stored_lam = stored_number(stored_lam)
            dataset = dataset if dataset is not None else (ckpt_dataset if isinstance(ckpt_dataset, str) else None)
            weights = f"checkpoint {Path(path).name} (epoch {state.get('epoch')})"
            normal_change = stored_number((state.get("extra") or {}).get("normal_change"))
        elif preset is not None:
            from m2s2l_edge.models import create_model

            model = create_model(preset, seed=seed, scan_backend=scan_backend)
            weights = f"preset {preset}, fresh weights (seed {seed})"
            stored_lam = normal_change = None
        else:
            raise ValueError("the torch backend needs a checkpoint path or preset=...")
        from m2s2l_edge.artifacts.checkpoint import weights_digest

        digest = weights_digest(model)  # of the weights as stored, before any rewrite or cast
        self.model = model.eval().to(self.device)
        self._net = self.model
        if optimize:
            from m2s2l_edge.models.fold import optimize_for_inference

            self._net = copy.deepcopy(self.model)
            optimize_for_inference(self._net)  # in FP32, before any cast to FP16
        if precision == "fp16":
            self.model.half()
            self._net.half()
        self.precision = precision
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        lam_value, lam_source = resolve_lambda(dataset, lam, stored=stored_lam)
        cfg = self.model.cfg
        self._metadata = {
            **ExportMetadata(
                config=cfg.replace(scan_backend="auto").to_dict(), scan="torch", precision=precision, batch="dynamic",
                lam=lam_value, lambda_source=lam_source, dataset=dataset, weights=weights, weights_sha256=digest,
                versions=library_versions(), normal_change=normal_change,
            ).to_dict(),
            "scan_backend": resolve_backend(scan_backend, self.device),
            "device": str(self.device),
            "inference_rewrites": inference_rewrites(self._net),
        }

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        c = self.model.cfg
        return (TensorSpec("clip", ("batch", c.clip_len, c.in_channels, c.image_size, c.image_size), "float32"),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        c = self.model.cfg
        return tuple(TensorSpec(n, ("batch", 3, c.image_size, c.image_size), "float32")
                     for n in ("frame_pred", "motion_pred"))

    @property
    def metadata(self) -> dict:
        return self._metadata

    def run(self, clips: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        clips = check_clips(clips, self.inputs[0].shape)
        x = torch.from_numpy(clips).to(self.device, self._dtype)
        with torch.inference_mode():
            frame, motion = self._net.predict(x)
        return {"frame_pred": frame.float().cpu().numpy(), "motion_pred": motion.float().cpu().numpy()}
