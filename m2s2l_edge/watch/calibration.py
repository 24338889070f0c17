"""Per-camera calibration: the normal footage's statistics for a score, and a threshold for a false-alarm rate.

Why not ``eval``'s min-max: it normalises each video by its own minimum and maximum, which needs the whole video
and makes a quiet hour and a busy hour incomparable. A camera instead freezes statistics of its own normal footage
(:class:`~m2s2l_edge.scoring.stream.NormalStats`) and scores each frame from its own terms
(:func:`~m2s2l_edge.scoring.stream.calibrated_scores`: 0 = typical normal, higher = more anomalous, in robust σ of
the normal footage). A calibration is fitted for one score (``stream``, the default, or ``paper``) and records it;
it belongs to one model, identified by what decides its scores (:class:`ModelIdentity`), not by one file.

Threshold for ``false_alarms_per_hour`` r: the score is smoothed as the event tracker smooths it
(:class:`~m2s2l_edge.scoring.stream.Smoother`, by default a trailing mean over 5 scored frames), and an alarm can
start where the smoothed score steps from below the threshold to at or above it (an *up-crossing*). The threshold is
the lowest level the smoothed calibration footage crossed upwards at most r times per hour. Counting crossings rather
than reading a quantile keeps this right whatever the frames' correlation. Every crossing is counted, while the
tracker also requires ``min_duration_s`` above the level and a cooldown between events, so the rate of *events* on
such footage is at most r.

Footage too short to count r per hour (fewer than ``MIN_CROSSINGS`` expected, i.e. shorter than 3/r hours) gets a
warning saying so and how long it would have to be; the crossing rate is then extrapolated from the tail (peaks over
a threshold: above the footage's 90th percentile u the excess is taken as exponential, its scale β the mean excess,
and the rate at level x as rate(u)·exp(−(x − u)/β), solved for r; on simulated Gaussian, Laplace and floored scores
this meets r in the median, where fitting log(rate) linearly overshot it tenfold). The result lies between the
footage's own largest smoothed score (footage shorter than one expected false alarm should raise none) and that maximum
plus ``EXTRAPOLATION_REACH`` × its distance from the median (a short or flat tail must not extrapolate to a level no
score can reach), and never below ``MIN_THRESHOLD`` (one robust σ).
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

from m2s2l_edge.config import ScoreConfig
from m2s2l_edge.scoring.model import ModelScoring
from m2s2l_edge.scoring.stream import NormalStats, calibrated_scores, fit_stats, smooth
from m2s2l_edge.scoring.terms import TERMS
from m2s2l_edge.scoring.video import score_fused
from m2s2l_edge.watch.events import EventConfig

logger = logging.getLogger(__name__)

FORMAT = "m2s2l-edge-calibration/2"
OLD_FORMATS = ("m2s2l-edge-calibration/1",)
MIN_THRESHOLD = 1.0
MIN_CROSSINGS = 3  # counts below this are too noisy to read a rate from
TAIL_QUANTILE = 0.9  # where the tail a short footage's threshold is extrapolated from begins
EXTRAPOLATION_REACH = 2.0  # an extrapolated threshold lies at most this many (max − median) above the footage's max
RECOMMENDED_MINUTES = 10  # what the docs ask for: enough for the rate's tail to be fitted from well-counted levels
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
    """Which model a calibration belongs to: what decides its scores, so that the checkpoint, its plugin and portable
    ONNX exports, an engine built from them and a Triton-served copy share one calibration.

    ``weights_sha256``: the digest of the source weights the model records
    (:func:`m2s2l_edge.artifacts.checkpoint.weights_digest`); a model that records none (an export made before it
    was recorded) is identified by ``file_sha256``, the hash of its file. ``precision``: "float" for FP32 and FP16
    (their PSNRs agree within the export parity tolerance), else what the model records (e.g. "int8").
    ``file``: what the calibration was made with, for people (not compared).
    """

    weights_sha256: str
    preset: str | None
    image_size: tuple[int, int]
    clip_len: int
    lam: float
    score: str
    precision: str = "float"
    file: str = ""
    file_sha256: str = ""

    def mismatch(self, other: ModelIdentity) -> str | None:
        """Why ``other`` (the model being run) cannot use a calibration made with ``self``; None if it can."""
        if self.score != other.score:
            return (f"it was fitted for the {self.score} score, and this run scores with {other.score} (give "
                    f"--score {self.score}, or calibrate with --score {other.score})")
        if tuple(self.image_size) != tuple(other.image_size):
            return (f"it was made at resolution {self.image_size[0]}x{self.image_size[1]}, the model runs at "
                    f"{other.image_size[0]}x{other.image_size[1]}")
        if self.clip_len != other.clip_len:
            return f"it was made with T = {self.clip_len} frames, the model takes {other.clip_len}"
        if self.preset != other.preset:
            return f"it was made with preset {self.preset!r}, the model is {other.preset!r}"
        same = (self.weights_sha256 == other.weights_sha256 if self.weights_sha256 and other.weights_sha256
                else bool(self.file_sha256) and self.file_sha256 == other.file_sha256)
        if not same:
            mine = self.weights_sha256[:12] or f"file {self.file_sha256[:12]}"
            theirs = other.weights_sha256[:12] or f"file {other.file_sha256[:12]}"
            return (f"it was made with other weights ({self.file or '?'}, {mine}), not {other.file or '?'} ({theirs}); "
                    "calibrate with this model")
        if self.precision != other.precision:
            return (f"it was made at precision {self.precision}, the model runs at {other.precision} (its PSNRs "
                    "differ beyond the export parity tolerance); calibrate with this model")
        if not math.isclose(self.lam, other.lam, abs_tol=1e-9):
            return f"it was made with λ = {self.lam}, the model uses λ = {other.lam}"
        return None


def identity_of(scoring: ModelScoring, path: str | os.PathLike | None = None) -> ModelIdentity:
    """The identity of the model ``scoring`` was resolved for; ``path``: its file, hashed only when the model records
    no weights digest."""
    return ModelIdentity(
        weights_sha256=scoring.weights_sha256,
        preset=scoring.preset,
        image_size=tuple(scoring.image_size),
        clip_len=scoring.clip_len,
        lam=scoring.lam,
        score=scoring.score_name,
        precision=scoring.precision,
        file=Path(path).name if path else scoring.weights,
        file_sha256=file_sha256(path) if path and not scoring.weights_sha256 and Path(path).is_file() else "",
    )


@dataclass(frozen=True)
class Calibration:
    """The stored calibration of one camera (or of the footage it was fitted on), for one score."""

    score: str  # the score's name (stream, paper)
    score_config: ScoreConfig  # its settings, λ included
    stats: NormalStats
    threshold: float  # on the calibrated score's scale, for the smoothed score
    false_alarms_per_hour: float
    window: int  # smoothing window (frames) the threshold assumes
    smoothing: str  # mean | median | ema | none, as the event tracker smooths
    fps: float
    count: int
    stream_seconds: float
    quantiles: dict = field(default_factory=dict)  # calibrated-score quantiles {"0.5": ...} of the footage
    threshold_method: str = ""
    warning: str = ""  # what the footage could not support (e.g. too short for the rate); "" when nothing
    model: ModelIdentity | None = None
    sources: tuple[str, ...] = ()
    format: str = FORMAT

    def scores(self, terms: dict) -> np.ndarray:
        """Calibrated scores of frames from their terms (each (N,) array or a float) → (N,)."""
        arrays = {k: np.atleast_1d(np.asarray(v, dtype=np.float64)) for k, v in terms.items()}
        return calibrated_scores(arrays, self.stats, self.score_config)

    def frame_score(self, terms: dict) -> float:
        """The calibrated score of one frame from its terms (floats)."""
        return float(self.scores(terms)[0])

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.model is not None:
            d["model"]["image_size"] = list(self.model.image_size)
        d["sources"] = list(self.sources)
        d["score_definition"] = ("m2s2l_edge.scoring.stream.calibrated_scores(terms, stats, score_config); 0 = "
                                 "typical normal, in robust σ of the normal footage")
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "calibration") -> Calibration:
        if isinstance(d, dict) and d.get("format") in OLD_FORMATS:
            raise ValueError(f"{source} was made by an earlier m2s2l-edge (format {d['format']!r}), before scores "
                             "were named and models identified by their weights; calibrate again with "
                             "`m2s2l-edge calibrate`")
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
            d["score_config"] = ScoreConfig(**d["score_config"])
            d["stats"] = NormalStats(**d["stats"])
            d["sources"] = tuple(d.get("sources", ()))
            cal = cls(**d, model=model)
        except (TypeError, KeyError, ValueError) as e:
            raise ValueError(f"{source}: malformed calibration ({e})") from None
        highest = highest_score(cal)
        if cal.threshold > highest:
            raise ValueError(f"{source}: threshold {cal.threshold:.4g} can never be reached (the highest score a frame "
                             f"can have is {highest:.4g}): calibrate again on longer normal footage")
        return cal


# --- the file's fields, each checked for type and range (a calibration is edited by hand, copied, truncated) ---------

# The worst terms a frame can have: frame errors on the [0, 1] scale are at most 1 (0 dB), motion errors (of
# differences of [-1, 1] frames, halved) at most 2 (-6.02 dB), the frame change lies in [0, 2]. A threshold above the
# score of such a frame is never reached, and no event can ever start.
LOWEST_APP_DB, LOWEST_MOT_DB = 0.0, -10.0 * math.log10(4.0)
CHANGE_RANGE = (0.0, 2.0)


def highest_score(cal: Calibration) -> float:
    """The highest calibrated score any frame can reach under ``cal`` (its worst terms, either end of the change)."""
    worst = {"psnr_app": LOWEST_APP_DB, "patch_app": LOWEST_APP_DB, "psnr_mot": LOWEST_MOT_DB,
             "patch_mot": LOWEST_MOT_DB}
    return float(max(cal.frame_score({**worst, "change": c}) for c in CHANGE_RANGE))


def stall_level(cfg: ScoreConfig, stats: NormalStats) -> float | None:
    """What a stalled picture scores, held for the smoothing window (the level a frozen camera's smoothed score
    settles at); None where the score has no stall rule (``paper``, ``stall_ratio`` 0, or no normal change)."""
    if cfg.method == "paper" or cfg.stall_ratio <= 0 or stats.change_ref <= 0:
        return None
    frozen = {k: np.zeros(1) for k in TERMS}  # the PSNRs do not matter: a stalled frame's score is the stall rule's
    return float(calibrated_scores(frozen, stats, cfg)[0])


def stall_note(threshold: float, level: float | None) -> str:
    """A warning when ``threshold`` lies at or above a stalled picture's level (a frozen camera raises no event);
    "" otherwise."""
    if level is None or threshold < level:
        return ""
    return (f"the threshold {threshold:.3g} is at or above what a frozen picture scores ({level:.3g}), so a "
            "stalled camera would raise no event; calibrate on normal footage the model was not trained on, or set a "
            "lower --threshold")


def _finite(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# rule → (check, what it must be)
_RULES = {
    "finite": (_finite, "a finite number"),
    "positive": (lambda v: _finite(v) and v > 0, "a finite number > 0"),
    "nonnegative": (lambda v: _finite(v) and v >= 0, "a finite number >= 0"),
    "fraction": (lambda v: _finite(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "count": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "text_or_null": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "smoothing": (lambda v: v in ("mean", "median", "ema", "none"), "one of mean, median, ema, none"),
    "size": (lambda v: isinstance(v, list | tuple) and len(v) == 2 and all(_integer(x) and x >= 1 for x in v),
             "[height, width], two integers >= 1"),
    "texts": (lambda v: isinstance(v, list | tuple) and all(isinstance(x, str) for x in v), "a list of strings"),
    "quantiles": (lambda v: isinstance(v, dict) and all(_finite(x) for x in v.values()),
                  "a mapping of quantile to finite number"),
    "mapping": (lambda v: isinstance(v, dict), "a mapping"),
}
# Every field of the file, with its rule (a section's own fields below); the required ones in _REQUIRED.
_FIELDS = {
    "score": "text", "score_config": "mapping", "stats": "mapping", "threshold": "positive",
    "false_alarms_per_hour": "positive", "window": "count", "smoothing": "smoothing", "fps": "positive",
    "count": "count", "stream_seconds": "nonnegative", "quantiles": "quantiles", "threshold_method": "text",
    "warning": "text", "model": "mapping", "sources": "texts", "format": "text", "score_definition": "text",
}
_SECTIONS = {
    "stats": {"center": "finite", "scale": "positive", "change_ref": "nonnegative", "change_scale": "positive"},
    "score_config": {"method": "text", "lam": "fraction", "patch_fraction": "fraction", "stall_ratio": "fraction",
                     "smooth_sigma": "nonnegative", "floor_quantile": "fraction", "motion_weight": "fraction",
                     "stall_score": "nonnegative"},
    "model": {"weights_sha256": "text", "preset": "text_or_null", "image_size": "size", "clip_len": "count",
              "lam": "fraction", "score": "text", "precision": "text", "file": "text", "file_sha256": "text"},
}
_REQUIRED = ("score", "score_config", "stats", "threshold", "false_alarms_per_hour", "window", "smoothing", "fps",
             "count", "stream_seconds")


def check_fields(d: dict, source: str = "calibration") -> None:
    """ValueError (one line naming the file and the field) unless every field of a calibration's JSON has the type
    and range it must: numbers are numbers (not strings), finite (JSON's Infinity and NaN are refused), scales and
    rates > 0, the window an integer >= 1, the smoothing a known one, the model's resolution two integers, no field
    unknown; and the threshold one that a frame's score can reach."""
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ValueError(f"{source}: malformed calibration (no {', '.join(missing)})")

    def check(data: dict, fields: dict, where: str) -> None:
        for key, value in data.items():
            rule = fields.get(key)
            if rule is None:
                raise ValueError(f"{source}: malformed calibration (unknown field {where}{key!r})")
            test, what = _RULES[rule]
            if not (value is None and key == "model") and not test(value):
                raise ValueError(f"{source}: malformed calibration ({where}{key} must be {what}, got {value!r})")

    check(d, _FIELDS, "")
    for section, fields in _SECTIONS.items():
        if d.get(section) is not None:
            check(d[section], fields, f"{section}.")
    if d["score"] != d["score_config"].get("method"):
        raise ValueError(f"{source}: malformed calibration (score {d['score']!r} but score_config.method "
                         f"{d['score_config'].get('method')!r})")


def upcrossings(smoothed: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """For each level u: how often the series steps from below u to at or above it (an alarm could start). (L,)."""
    s = np.asarray(smoothed, dtype=np.float64)
    a, b = s[:-1], s[1:]
    rising = a < b
    # A rising step crosses u iff a < u <= b; since b < u implies a < u, that count is #{a < u} - #{b < u}.
    lo, hi = np.sort(a[rising]), np.sort(b[rising])
    return np.searchsorted(lo, levels, side="left") - np.searchsorted(hi, levels, side="left")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def counting_seconds(false_alarms_per_hour: float) -> float:
    """Footage long enough to count ``false_alarms_per_hour`` directly (``MIN_CROSSINGS`` expected crossings)."""
    return MIN_CROSSINGS / false_alarms_per_hour * 3600.0


def threshold_for_rate(smoothed: np.ndarray, fps: float, false_alarms_per_hour: float) -> tuple[float, str, str]:
    """The threshold on the smoothed score for a target rate of alarm starts (see the module docstring), how it was
    derived, and a warning ("" for none) when the footage is too short to count that rate."""
    s = np.asarray(smoothed, dtype=np.float64)
    seconds = s.size / fps
    hours = seconds / 3600.0
    # Candidate levels: every value the smoothed score took in its upper half (the tail is where the answer is, and
    # a fixed grid of quantiles would be too coarse there).
    levels = np.unique(s[s >= np.median(s)])
    counts = upcrossings(s, levels)
    rates = counts / hours
    ok = np.nonzero(rates <= false_alarms_per_hour)[0]
    warning = ""
    if false_alarms_per_hour * hours >= MIN_CROSSINGS and ok.size:
        value = float(levels[ok[0]])
        method = (f"empirical: the lowest level the smoothed score crossed upwards at most {false_alarms_per_hour:g} "
                  f"times per hour of the footage ({int(counts[ok[0]])} times in {hours:.2f} h)")
    else:
        warning = (f"{_duration(seconds)} of footage is too short to show {false_alarms_per_hour:g} false alarm(s) per "
                   f"hour ({_duration(counting_seconds(false_alarms_per_hour))} would count it; at least "
                   f"{RECOMMENDED_MINUTES} min are recommended): the threshold is extrapolated from the footage's "
                   "tail and the false-alarm rate is not guaranteed")
        # Peaks over a threshold: above u (the footage's 90th percentile) the excess of a Gaussian-like or
        # exponential-like score is close to exponential, so the up-crossing rate falls as exp(−(x − u) / β) with β
        # the mean excess over u (a stable estimate from a few dozen frames, where a fitted slope is not); solved for
        # the target rate from u's counted rate.
        u = float(np.quantile(s, TAIL_QUANTILE))
        excess = s[s > u] - u
        rate_u = float(upcrossings(s, np.array([u]))[0]) / hours
        if excess.size >= MIN_CROSSINGS and excess.mean() > 0 and rate_u > 0:
            beta = float(excess.mean())
            value = u + beta * max(math.log(rate_u / false_alarms_per_hour), 0.0)
            method = (f"extrapolated: exponential tail above the footage's {TAIL_QUANTILE:g} quantile ({u:.3g}, "
                      f"crossed {rate_u:.0f} times per hour, mean excess {beta:.3g}) of {_duration(seconds)} of "
                      f"footage, solved for {false_alarms_per_hour:g} per hour")
        else:
            q90, q99 = np.quantile(s, [0.9, 0.99])
            value = float(q99 + 2.0 * max(q99 - q90, 0.05))
            method = "extrapolated: too little tail to fit; q99 + 2·(q99 − q90) of the smoothed score"
        top, middle = float(s.max()), float(np.median(s))
        reach = top + EXTRAPOLATION_REACH * max(top - middle, 0.0)
        if value < top:
            # Footage shorter than one expected false alarm should raise none: its own maximum is a floor.
            value = top
            method += "; raised to the footage's largest smoothed score"
        elif value > reach:
            value = reach
            method += (f"; lowered to the footage's largest smoothed score + {EXTRAPOLATION_REACH:g} × its distance "
                       "from the median (a tail this short says nothing further out)")
    if value < MIN_THRESHOLD:
        method += f"; raised to the floor {MIN_THRESHOLD:g}"
        value = MIN_THRESHOLD
    return value, method, warning


def fit(terms: dict[str, np.ndarray], score: ModelScoring | ScoreConfig, *, fps: float,
        false_alarms_per_hour: float = 1.0, window: int = DEFAULT_WINDOW, smoothing: str = DEFAULT_SMOOTHING,
        normal_change: float | None = None, model: ModelIdentity | None = None, sources: tuple[str, ...] = (),
        segments: list[int] | None = None) -> Calibration:
    """Fit a calibration to the per-frame ``terms`` of normal footage (each (N,), :data:`TERMS`).

    ``score``: the model's :class:`ModelScoring` (its score, λ and normal frame change) or a bare ScoreConfig (then
    ``normal_change`` gives c₀). ``segments``: the lengths of the continuous stretches the frames come in (per
    source), so the smoothing never runs across two videos; None = one stretch.
    """
    if isinstance(score, ModelScoring):
        cfg, name, normal_change = score.score, score.score_name, score.normal_change
    else:
        cfg, name = score, score.method
    terms = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in terms.items()}
    n = len(terms["change"])
    if n < MIN_FRAMES:
        raise ValueError(f"calibration needs at least {MIN_FRAMES} scored frames of normal footage, got {n}")
    if not all(np.all(np.isfinite(v)) for v in terms.values()):
        raise ValueError("calibration footage gave non-finite PSNRs")
    if not false_alarms_per_hour > 0:
        raise ValueError(f"--false-alarms-per-hour must be > 0, got {false_alarms_per_hour}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    stats = fit_stats(terms, cfg, normal_change)
    scores = calibrated_scores(terms, stats, cfg)
    bounds = np.cumsum([0, *(segments if segments is not None else [n])])
    if bounds[-1] != n:
        raise ValueError(f"segments cover {bounds[-1]} frames, the terms {n}")
    smoothed = np.concatenate([smooth(scores[a:b], smoothing, window) for a, b in zip(bounds[:-1], bounds[1:],
                                                                                      strict=True)])
    threshold, method, warning = threshold_for_rate(smoothed, fps, false_alarms_per_hour)
    frozen = stall_note(threshold, stall_level(cfg, stats))
    warning = "; ".join(w for w in (warning, frozen) if w)
    quantiles = {str(q): float(v) for q, v in zip(QUANTILES, np.quantile(scores, QUANTILES), strict=True)}
    fused = score_fused(terms, cfg)
    logger.debug("calibration: fused PSNR mean %.3f dB, std %.3f dB over %d frames", fused.mean(), fused.std(), n)
    return Calibration(
        score=name, score_config=cfg, stats=stats, threshold=threshold,
        false_alarms_per_hour=float(false_alarms_per_hour), window=int(window), smoothing=smoothing, fps=float(fps),
        count=int(n), stream_seconds=float(n / fps), quantiles=quantiles, threshold_method=method, warning=warning,
        model=model, sources=tuple(sources),
    )


def save(cal: Calibration, path: str | os.PathLike) -> None:
    """Write ``cal`` (atomically, fsynced); a calibration that :func:`load` would refuse is never written."""
    from m2s2l_edge.io import atomic_write_text

    data = cal.to_dict()
    Calibration.from_dict(data, "the calibration")
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
    """Refuse a calibration made for another score, model, precision or resolution (ValueError naming the
    difference); ``source`` says which calibration, e.g. "calibration file cam.calib.json"."""
    if cal.model is None:
        raise ValueError(f"{source} records no model; make it with `m2s2l-edge calibrate`")
    why = cal.model.mismatch(model)
    if why is not None:
        raise ValueError(f"{source} does not fit this model: {why}")
