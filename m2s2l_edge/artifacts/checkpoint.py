"""Checkpoints: model config + weights + optimiser state, written atomically, refused clearly when wrong.

Format (a dict saved with torch.save): {"format": "m2s2l-edge/1", "config": ModelConfig dict, "model": state_dict,
"optimizer": state_dict | None, "scheduler": state_dict | None, "epoch": completed epochs, "step": int,
"extra": dict (train config, data set, rng state, versions...), "arch": registry name of the architecture (absent in
older files: m2s2l)}.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from m2s2l_edge.config import ModelConfig
from m2s2l_edge.io import atomic_write

FORMAT = "m2s2l-edge/1"


def save_checkpoint(
    path: str | os.PathLike,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: object | None = None,
    epoch: int = 0,
    step: int = 0,
    extra: dict | None = None,
) -> Path:
    rewrites = getattr(model, "inference_rewrites", None)
    if rewrites:
        raise ValueError(
            f"this model is an inference copy ({', '.join(rewrites)}: BatchNorm folded / convolutions merged); "
            "save the original model, whose parameters a checkpoint must hold"
        )
    state = {
        "format": FORMAT,
        "config": model.cfg.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "step": step,
        "extra": extra or {},
        "arch": getattr(model, "arch", "m2s2l"),
    }
    return atomic_write(path, lambda p: torch.save(state, p))


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate a checkpoint file; ValueError (one line) when it is missing fields or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several unrelated types for truncated / foreign files
        # Only the exception's type: torch's messages run to several lines, and for foreign bytes they suggest
        # weights_only=False, which would be the wrong advice for a file that is simply corrupt.
        raise ValueError(f"checkpoint {path} is corrupt or not a PyTorch file ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not an m2s2l-edge checkpoint (expected format {FORMAT!r})")
    for key in ("config", "model", "epoch"):
        if key not in state:
            raise ValueError(f"checkpoint {path} is missing {key!r}")
    return state


def load_model(path: str | os.PathLike, *, expected_preset: str | None = None, scan_backend: str | None = None):
    """Rebuild the model stored in a checkpoint. Returns (model, state).

    ``expected_preset``: refuse a checkpoint of another preset with a message naming both.
    """
    from m2s2l_edge.models.registry import create_trainable

    state = read_checkpoint(path)
    try:
        cfg = ModelConfig.from_dict(state["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint {path}: {e}") from None
    if expected_preset is not None and cfg.name != expected_preset:
        raise ValueError(f"checkpoint {path} holds preset {cfg.name!r}, not {expected_preset!r}")
    if scan_backend is not None:
        cfg = cfg.replace(scan_backend=scan_backend)
    model = create_trainable(state.get("arch", "m2s2l"), cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ValueError(f"checkpoint {path} does not match its own config: {first}") from None
    return model, state


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over a model's parameters and buffers: names, shapes, dtypes and values (floating point as float32, on
    the CPU), in name order. It identifies the weights whatever file holds them — the checkpoint, the ONNX exports
    and engines made from it (their metadata records it), a served copy — and does not change when the same state is
    saved again (a file's own hash does). Take it of the model as trained, before any inference rewrite or cast."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu()
        if t.is_floating_point():
            t = t.float()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()
