"""Per-camera calibration: the fused PSNR of normal footage, a calibrated score and a threshold for a false-alarm rate.

Why not ``eval``'s min-max: it normalises each video by its own minimum and maximum, which needs the whole video
and makes a quiet hour and a busy hour incomparable. A camera instead freezes statistics of its own normal footage.

Calibrated score (0 = typical normal, higher = more anomalous; low PSNR is anomalous)::

    score = (median(fused) − fused) / scale,      scale = 1.4826 · MAD(fused)   (floored at 0.05 dB)

median and MAD (median absolute deviation; 1.4826·MAD estimates σ for a normal distribution) are robust to the few
odd frames any "normal" footage holds. The floor keeps a static scene (MAD ≈ 0) from turning noise into huge scores.

Threshold for ``false_alarms_per_hour`` r: the score is smoothed as the event tracker smooths it (its default:
a trailing mean over 5 scored frames), and an alarm can start where the smoothed score steps from below the threshold to
at or above it (an *up-crossing*). The threshold is the lowest level the smoothed calibration footage crossed
upwards at most r times per hour. Counting crossings rather than reading a quantile keeps this right whatever the
frames' correlation. Every crossing is counted, while the tracker also requires ``min_duration_s`` above the level
and a cooldown between events, so the rate of *events* on such footage is at most r.

When the footage is too short to count r per hour (fewer than ``MIN_CROSSINGS`` expected, i.e. shorter than
3/r hours), the crossing rate is extrapolated: log(crossings per hour) is fitted linearly in the level over the
upper tail where it is well counted (Rice's formula makes it close to straight for Gaussian-like scores), and solved
for r; the threshold is then never below the footage's own largest smoothed score (footage shorter than one
expected false alarm should raise none). It is never below ``MIN_THRESHOLD`` (one robust standard deviation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from m2s2l_edge.watch.events import EventConfig

logger = logging.getLogger(__name__)

FORMAT = "m2s2l-edge-calibration/1"
MAD_TO_SIGMA = 1.4826
SCALE_FLOOR_DB = 0.05
MIN_THRESHOLD = 1.0
MIN_CROSSINGS = 3  # counts below this are too noisy to read a rate from
# The smoothing the threshold assumes: the event tracker's own default, read from it so the two never disagree.
DEFAULT_SMOOTHING = EventConfig.smoothing
DEFAULT_WINDOW = EventConfig.smoothing_frames
QUANTILES = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)
MIN_FRAMES = 20


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a calibration belongs to. ``sha256`` of the model file ("" for fresh preset weights: ``weights``
    then says which preset and seed)."""

    kind: str
    file: str
    sha256: str
    preset: str | None
    image_size: tuple[int, int]
    clip_len: int
    lam: float
    weights: str = ""

    def mismatch(self, other: ModelIdentity) -> str | None:
        """Why ``other`` (the model being run) cannot use a calibration made with ``self``; None if it can."""
        if tuple(self.image_size) != tuple(other.image_size):
            return (f"it was made at resolution {self.image_size[0]}x{self.image_size[1]}, the model runs at "
                    f"{other.image_size[0]}x{other.image_size[1]}")
        if self.clip_len != other.clip_len:
            return f"it was made with T = {self.clip_len} frames, the model takes {other.clip_len}"
        if self.preset != other.preset:
            return f"it was made with preset {self.preset!r}, the model is {other.preset!r}"
        if self.sha256 != other.sha256 or self.weights != other.weights:
            made = self.file or self.weights
            run = other.file or other.weights
            return (f"it was made with another model ({made}, sha256 {self.sha256[:12] or '-'}), not {run} "
                    f"(sha256 {other.sha256[:12] or '-'}); calibrate with the model file you watch with")
        if not math.isclose(self.lam, other.lam, abs_tol=1e-9):
            return f"it was made with λ = {self.lam}, the model uses λ = {other.lam}"
        return None


def identity_of(kind: str, path: str | os.PathLike | None, backend, model_input) -> ModelIdentity:
    meta = getattr(backend, "metadata", None) or {}
    return ModelIdentity(
        kind=kind,
        file=Path(path).name if path else "",
        sha256=file_sha256(path) if path else "",
        preset=model_input.preset,
        image_size=tuple(model_input.image_size),
        clip_len=model_input.clip_len,
        lam=model_input.lam,
        weights="" if path else str(meta.get("weights", "")),
    )


def smooth(x: np.ndarray, kind: str = DEFAULT_SMOOTHING, window: int = DEFAULT_WINDOW) -> np.ndarray:
    """The event tracker's smoothing, offline: trailing ``mean`` or ``median`` over ``window`` frames, ``ema``
    (α = 2/(N+1)), or ``none``; the first frames use what exists so far. (N,) → (N,)."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "none" or window <= 1 or x.size == 0:
        return x.copy()
    if kind == "mean":
        c = np.concatenate([[0.0], np.cumsum(x)])
        idx = np.arange(1, x.size + 1)
        lo = np.maximum(idx - window, 0)
        return (c[idx] - c[lo]) / (idx - lo)
    if kind == "ema":
        alpha, out, acc = 2.0 / (window + 1.0), np.empty_like(x), x[0]
        for i, v in enumerate(x):
            acc = v if i == 0 else alpha * v + (1 - alpha) * acc
            out[i] = acc
        return out
    if kind != "median":
        raise ValueError(f"unknown smoothing {kind!r}; valid: mean, median, ema, none")
    head = [np.median(x[:i]) for i in range(1, min(window, x.size + 1))]
    tail = np.median(np.lib.stride_tricks.sliding_window_view(x, window), axis=1) if x.size >= window else []
    return np.concatenate([np.asarray(head, dtype=np.float64), np.asarray(tail, dtype=np.float64)])


@dataclass(frozen=True)
class Calibration:
    """The stored calibration of one camera (or of the footage it was fitted on)."""

    center: float  # median fused PSNR, dB
    scale: float  # robust standard deviation of the fused PSNR, dB
    threshold: float  # on the calibrated score scale
    false_alarms_per_hour: float
    window: int  # smoothing window (frames) the threshold assumes
    smoothing: str  # mean | median | ema | none, as the event tracker smooths
    fps: float
    count: int
    stream_seconds: float
    mean: float
    std: float
    quantiles: dict = field(default_factory=dict)  # fused PSNR quantiles {"0.5": ...}
    threshold_method: str = ""
    model: ModelIdentity | None = None
    sources: tuple[str, ...] = ()
    format: str = FORMAT

    def score(self, fused: float | np.ndarray) -> float | np.ndarray:
        """Calibrated score: (center − fused) / scale. 0 = typical normal, higher = more anomalous."""
        return (self.center - fused) / self.scale

    def to_dict(self) -> dict:
        d = asdict(self)
        d["score_definition"] = "score = (center - fused) / scale; fused = lambda*psnr_app + (1-lambda)*psnr_mot"
        if self.model is not None:
            d["model"]["image_size"] = list(self.model.image_size)
        d["sources"] = list(self.sources)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "calibration") -> Calibration:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{source} is not an m2s2l-edge calibration (format {got!r}, expected {FORMAT!r})")
        check_fields(d, source)
        d = dict(d)
        d.pop("score_definition", None)
        try:
            model = d.pop("model", None)
            if model is not None:
                model = ModelIdentity(**{**model, "image_size": tuple(model["image_size"])})
            d["sources"] = tuple(d.get("sources", ()))
            cal = cls(**d, model=model)
        except (TypeError, KeyError) as e:
            raise ValueError(f"{source}: malformed calibration ({e})") from None
        return cal


# --- the file's fields, each checked for type and range (a calibration is edited by hand, copied, truncated) ---------

# The lowest fused PSNR a frame can have: frame errors on the [0, 1] scale are at most 1 (0 dB), motion errors (of
# differences of [-1, 1] frames, halved) at most 2 (-6.02 dB). A threshold above the score of that frame is never
# reached, and no event can ever start.
LOWEST_FUSED_DB = -10.0 * math.log10(4.0)


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# field → (check, what it must be); every field of the file, None where it may be absent.
_RULES = {
    "finite": (_finite, "a finite number"),
    "positive": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "nonnegative": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "count": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "text_or_null": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "smoothing": (lambda v: v in ("mean", "median", "ema", "none"), "one of mean, median, ema, none"),
    "lambda": (lambda v: _finite(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "size": (lambda v: isinstance(v, list | tuple) and len(v) == 2 and all(_integer(x) and x >= 1 for x in v),
             "[height, width], two integers >= 1"),
    "texts": (lambda v: isinstance(v, list | tuple) and all(isinstance(x, str) for x in v), "a list of strings"),
    "quantiles": (lambda v: isinstance(v, dict) and all(_finite(x) for x in v.values()),
                  "a mapping of quantile to finite number"),
}
_FIELDS = {
    "center": "finite", "scale": "positive", "threshold": "positive", "false_alarms_per_hour": "positive",
    "window": "count", "smoothing": "smoothing", "fps": "positive", "count": "count",
    "stream_seconds": "nonnegative", "mean": "finite", "std": "nonnegative", "quantiles": "quantiles",
    "threshold_method": "text", "sources": "texts", "format": "text", "score_definition": "text",
}
_MODEL_FIELDS = {
    "kind": "text", "file": "text", "sha256": "text", "preset": "text_or_null", "image_size": "size",
    "clip_len": "count", "lam": "lambda", "weights": "text",
}
_REQUIRED = ("center", "scale", "threshold", "false_alarms_per_hour", "window", "smoothing", "fps", "count",
             "stream_seconds", "mean", "std")


def check_fields(d: dict, source: str = "calibration") -> None:
    """ValueError (one line naming the file and the field) unless every field of a calibration's JSON has the type
    and range it must: numbers are numbers (not strings), finite (JSON's Infinity and NaN are refused), scale and
    rates > 0, the window an integer >= 1, the smoothing a known one, the model's resolution two integers, and the
    threshold one that a frame's score can reach."""
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ValueError(f"{source}: malformed calibration (no {', '.join(missing)})")
    if d.get("model") is not None and not isinstance(d["model"], dict):
        raise ValueError(f"{source}: malformed calibration (model must be a mapping, got {d['model']!r})")
    for fields, where, data in ((_FIELDS, "", d), (_MODEL_FIELDS, "model.", d.get("model") or {})):
        for key, value in data.items():
            if not where and key == "model":
                continue
            rule = fields.get(key)
            if rule is None:
                raise ValueError(f"{source}: malformed calibration (unknown field {where}{key!r})")
            check, what = _RULES[rule]
            if not check(value):
                raise ValueError(f"{source}: malformed calibration ({where}{key} must be {what}, got {value!r})")
    highest = (d["center"] - LOWEST_FUSED_DB) / d["scale"]
    if d["threshold"] > highest:
        raise ValueError(f"{source}: threshold {d['threshold']:.4g} can never be reached (the highest score a frame "
                         f"can have is {highest:.4g}, at a fused PSNR of {LOWEST_FUSED_DB:.2f} dB): calibrate again "
                         "on longer normal footage")


def upcrossings(smoothed: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """For each level u: how often the series steps from below u to at or above it (an alarm could start). (L,)."""
    s = np.asarray(smoothed, dtype=np.float64)
    a, b = s[:-1], s[1:]
    rising = a < b
    # A rising step crosses u iff a < u <= b; since b < u implies a < u, that count is #{a < u} - #{b < u}.
    lo, hi = np.sort(a[rising]), np.sort(b[rising])
    return np.searchsorted(lo, levels, side="left") - np.searchsorted(hi, levels, side="left")


def threshold_for_rate(smoothed: np.ndarray, fps: float, false_alarms_per_hour: float) -> tuple[float, str]:
    """The threshold on the smoothed score for a target rate of alarm starts (see the module docstring) and how it
    was derived."""
    s = np.asarray(smoothed, dtype=np.float64)
    hours = s.size / fps / 3600.0
    # Candidate levels: every value the smoothed score took in its upper half (the tail is where the answer is, and
    # a fixed grid of quantiles would be too coarse there).
    levels = np.unique(s[s >= np.median(s)])
    counts = upcrossings(s, levels)
    rates = counts / hours
    ok = np.nonzero(rates <= false_alarms_per_hour)[0]
    target_count = false_alarms_per_hour * hours
    if target_count >= MIN_CROSSINGS and ok.size:
        value = float(levels[ok[0]])
        method = (f"empirical: the lowest level the smoothed score crossed upwards at most {false_alarms_per_hour:g} "
                  f"times per hour of the footage ({int(counts[ok[0]])} times in {hours:.2f} h)")
    else:
        # Too short to count that rare an alarm: fit log(crossing rate) against the level over the well-counted
        # upper range (a Gaussian or exponential tail is close to straight there) and solve for the target.
        fit_at = (counts >= MIN_CROSSINGS) & (levels >= np.quantile(s, 0.9))
        if np.count_nonzero(fit_at) >= 3 and np.ptp(levels[fit_at]) > 0:
            slope, intercept = np.polyfit(levels[fit_at], np.log(rates[fit_at]), 1)
        else:
            slope, intercept = 0.0, 0.0
        if slope < 0:
            value = float((math.log(false_alarms_per_hour) - intercept) / slope)
            method = (f"extrapolated: log(crossings per hour) fitted linearly in the level over "
                      f"{np.count_nonzero(fit_at)} levels of {hours * 60:.1f} min of footage, solved for "
                      f"{false_alarms_per_hour:g} per hour")
        else:
            q90, q99 = np.quantile(s, [0.9, 0.99])
            value = float(q99 + 2.0 * max(q99 - q90, SCALE_FLOOR_DB))
            method = "extrapolated: too few crossings to fit; q99 + 2·(q99 − q90) of the smoothed score"
        # Footage shorter than one expected false alarm should raise none: its own maximum is a floor.
        if value < float(s.max()):
            value = float(s.max())
            method += "; raised to the footage's largest smoothed score"
    if value < MIN_THRESHOLD:
        method += f"; raised to the floor {MIN_THRESHOLD:g}"
        value = MIN_THRESHOLD
    return value, method


def fit(fused: np.ndarray, *, fps: float, false_alarms_per_hour: float = 1.0, window: int = DEFAULT_WINDOW,
        smoothing: str = DEFAULT_SMOOTHING, model: ModelIdentity | None = None, sources: tuple[str, ...] = (),
        segments: list[np.ndarray] | None = None) -> Calibration:
    """Fit a calibration to the fused PSNRs of normal footage.

    ``segments``: the fused PSNRs split per continuous stretch (per source), so the smoothing never averages across
    two videos; None = one stretch.
    """
    fused = np.asarray(fused, dtype=np.float64).reshape(-1)
    if fused.size < MIN_FRAMES:
        raise ValueError(f"calibration needs at least {MIN_FRAMES} scored frames of normal footage, got {fused.size}")
    if not np.all(np.isfinite(fused)):
        raise ValueError("calibration footage gave non-finite PSNRs")
    if not false_alarms_per_hour > 0:
        raise ValueError(f"--false-alarms-per-hour must be > 0, got {false_alarms_per_hour}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    center = float(np.median(fused))
    scale = max(MAD_TO_SIGMA * float(np.median(np.abs(fused - center))), SCALE_FLOOR_DB)
    parts = segments if segments is not None else [fused]
    smoothed = np.concatenate([smooth((center - np.asarray(p)) / scale, smoothing, window) for p in parts])
    threshold, method = threshold_for_rate(smoothed, fps, false_alarms_per_hour)
    quantiles = {str(q): float(v) for q, v in zip(QUANTILES, np.quantile(fused, QUANTILES), strict=True)}
    return Calibration(
        center=center, scale=scale, threshold=threshold, false_alarms_per_hour=float(false_alarms_per_hour),
        window=int(window), smoothing=smoothing, fps=float(fps), count=int(fused.size),
        stream_seconds=float(fused.size / fps),
        mean=float(fused.mean()), std=float(fused.std()), quantiles=quantiles, threshold_method=method,
        model=model, sources=tuple(sources),
    )


def save(cal: Calibration, path: str | os.PathLike) -> None:
    """Write ``cal`` (atomically, fsynced); a calibration that :func:`check_fields` would refuse is never written."""
    from m2s2l_edge.io import atomic_write_text

    data = cal.to_dict()
    check_fields(data, "the calibration")
    atomic_write_text(path, json.dumps(data, indent=2))


def load(path: str | os.PathLike) -> Calibration:
    """Read a calibration file; ValueError (one line) for anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"calibration {path} is not JSON ({e})") from None
    return Calibration.from_dict(data, str(path))


def check_matches(cal: Calibration, model: ModelIdentity, source: str) -> None:
    """Refuse a calibration made with another model or resolution (ValueError naming the difference)."""
    if cal.model is None:
        raise ValueError(f"calibration {source} records no model; make it with `m2s2l-edge calibrate`")
    why = cal.model.mismatch(model)
    if why is not None:
        raise ValueError(f"calibration {source} does not fit this model: {why}")
