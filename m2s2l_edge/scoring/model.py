"""The score weight λ a run uses, and the numbers a model stores for its score, read one way everywhere."""

from __future__ import annotations

from m2s2l_edge.config import DEFAULT_LAMBDA, PAPER_LAMBDA

# Where a resolved λ came from (the second value of ``resolve_lambda``; exports record it as ``lambda_source``).
STORED = "stored in the model"


def stored_number(value) -> float | None:
    """A number a checkpoint or a model's metadata stored (λ, the normal frame change) as a float; None where it
    holds none or something that is not a number (its range is the reader's to check)."""
    return float(value) if isinstance(value, (int, float)) else None


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
    lam = metadata.get("lambda")
    if lam is None or (metadata.get("scan") == "torch" and metadata.get("lambda_source") != STORED):
        return None
    return float(lam)
