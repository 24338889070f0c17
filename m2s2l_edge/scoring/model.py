"""What a model brings to its scores, resolved once: λ, T, resolution, normalisation, the normal frame change, the
score and its window, the weights' identity. Every path (``eval``, ``watch``, ``calibrate``, the export parity
check, a Triton-served model) calls :func:`model_scoring` on the model's metadata and geometry."""

from __future__ import annotations

import math
from dataclasses import dataclass

from m2s2l_edge.config import DEFAULT_LAMBDA, PAPER_LAMBDA, ScoreConfig, get_score

# Where a resolved λ came from (the second value of ``resolve_lambda``; exports record it as ``lambda_source``).
STORED = "stored in the model"
# The input normalisation every path feeds (RGB frames x/127.5 − 1); a model that records another is refused.
SUPPORTED_NORMALIZATION = "[-1, 1]"
# Precisions whose PSNRs agree with the float32 model within the export parity tolerance (export/parity.py: FP16 moved
# the score by 3.5e-3 dB at most), so one calibration serves them all; any other precision a model records (e.g. an
# INT8 export) shifts the PSNR distribution and is part of the model's identity.
PARITY_PRECISIONS = ("fp32", "fp16")


def stored_number(value) -> float | None:
    """A number a checkpoint or a model's metadata stored (λ, the normal frame change) as a float; None where it
    holds none or something that is not a number (its range is the reader's to check)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _check_lambda(lam: float, what: str) -> float:
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"{what} must lie in [0, 1], got {lam}")
    return float(lam)


def resolve_lambda(dataset: str | None, lam: float | None = None, stored: float | None = None) -> tuple[float, str]:
    """The score weight λ and where it came from, the one rule every command and backend follows:

    1. ``lam``, given explicitly (``--lambda``): "explicit";
    2. ``stored``, the λ the model carries (an exported model's or engine's metadata, a checkpoint that stored one):
       "stored in the model";
    3. the paper's value for ``dataset`` (Ped2 0.6, Avenue 0.4, ShanghaiTech 0.5; any letter case): "paper (ped2)";
    4. our default 0.5 for any other data set or none.

    Raises ValueError for a λ outside [0, 1].
    """
    if lam is not None:
        return _check_lambda(lam, "lambda"), "explicit"
    if stored is not None:
        return _check_lambda(stored, "the model's stored lambda"), STORED
    key = dataset.lower() if dataset else None
    if key in PAPER_LAMBDA:
        return PAPER_LAMBDA[key], f"paper ({key})"
    return DEFAULT_LAMBDA, "default (our choice: data set not in the paper)" if dataset else "default (no data set)"


def model_lambda(metadata: dict) -> float | None:
    """The λ a backend's model carries (for ``resolve_lambda(..., stored=...)``), or None.

    An exported model (ONNX, engine) stores the λ fixed at export time in its metadata. The PyTorch backend's
    metadata holds a λ derived on the spot unless its checkpoint stored one (``lambda_source`` says which); only a
    stored one counts, so that the data set being evaluated picks the paper's value otherwise.
    """
    lam = stored_number(metadata.get("lambda"))
    if lam is None or (metadata.get("scan") == "torch" and metadata.get("lambda_source") != STORED):
        return None
    return lam


def score_precision(metadata: dict) -> str:
    """The precision that decides a model's PSNRs: "float" for every precision within the export parity tolerance of
    float32 (:data:`PARITY_PRECISIONS`), else the one recorded (an engine's own, else its export's)."""
    recorded = (metadata.get("engine") or {}).get("precision") or metadata.get("precision") or "fp32"
    return "float" if recorded in PARITY_PRECISIONS else str(recorded)


@dataclass(frozen=True)
class ModelScoring:
    """How one model's outputs become scores: its input (T past frames at (H, W), normalised to [-1, 1]), the score
    with its λ resolved (``score.lam``; ``lam_source`` says where it came from), the worst window's side in pixels,
    the normal frame change of its training footage (None: it stores none), and what identifies its weights."""

    clip_len: int
    image_size: tuple[int, int]
    score_name: str
    score: ScoreConfig
    lam_source: str
    normal_change: float | None
    preset: str | None
    precision: str
    weights: str  # where the weights came from, in words
    weights_sha256: str  # digest of the source weights ("" where the model records none)
    normalization: str = SUPPORTED_NORMALIZATION

    @property
    def lam(self) -> float:
        return self.score.lam

    @property
    def patch(self) -> int:
        """Side of the worst window, in pixels at the model's resolution."""
        return self.score.patch_size(min(self.image_size))


def model_scoring(metadata: dict, geometry: tuple[int, tuple[int, int]], *, score: str | ScoreConfig = "paper",
                  lam: float | None = None, dataset: str | None = None) -> ModelScoring:
    """Resolve everything a model decides about its scores, from its ``metadata`` (a backend's: checkpoint, ONNX,
    engine sidecar or Triton configuration) and ``geometry`` (T, (H, W)), for ``score`` (a name of
    :data:`m2s2l_edge.config.SCORES` or a ScoreConfig).

    λ: ``lam`` when given; else the score's own λ for our scores (``patch``, ``stream``: validated together with their
    other settings on our real footage); else, for ``paper``, :func:`resolve_lambda` with the model's stored λ and
    ``dataset`` (default: the data set the model records).

    Raises ValueError for a normalisation other than [-1, 1], a λ outside [0, 1], an unknown score, or a stored
    normal frame change that is no non-negative number.
    """
    name = score if isinstance(score, str) else score.method
    cfg = get_score(score) if isinstance(score, str) else score
    norm = metadata.get("normalization", SUPPORTED_NORMALIZATION)
    if norm != SUPPORTED_NORMALIZATION:
        raise ValueError(f"model normalisation {norm!r} is not supported (every path feeds RGB frames scaled to "
                         f"{SUPPORTED_NORMALIZATION})")
    if lam is not None:
        lam_value, source = _check_lambda(lam, "lambda"), "explicit"
    elif cfg.method != "paper":
        lam_value, source = cfg.lam, f"the {name} score's, validated on our real-footage set"
    else:
        recorded = metadata.get("dataset")
        dataset = dataset if dataset is not None else (recorded if isinstance(recorded, str) else None)
        lam_value, source = resolve_lambda(dataset, None, stored=model_lambda(metadata))
    reference = metadata.get("normal_change")
    change = stored_number(reference)
    if reference is not None and (change is None or not (math.isfinite(change) and change >= 0)):
        raise ValueError(f"the model's stored normal frame change is {reference!r}: expected a non-negative number "
                         f"(retrain, or re-export from a checkpoint that has one)")
    clip_len, size = geometry
    return ModelScoring(
        clip_len=int(clip_len), image_size=(int(size[0]), int(size[1])), score_name=name,
        score=cfg.replace(lam=lam_value), lam_source=source, normal_change=change,
        preset=metadata.get("preset"), precision=score_precision(metadata),
        weights=str(metadata.get("weights", "")), weights_sha256=str(metadata.get("weights_sha256") or ""),
        normalization=norm,
    )
