"""Frame-level evaluation (docs/DESIGN.md §6) over any inference backend.

Protocol, in order:

1. every test video is run clip by clip: the clip ending at frame t-1 predicts frame t, so the first T frames
   (T = clip length) have no prediction and are dropped from the scores *and* the labels;
2. per predicted frame: PSNR of the predicted frame and PSNR of the predicted motion (frame difference), both on
   [0, 1] images with MAX = 1 (:func:`m2s2l_edge.scoring.terms.psnr`);
3. fused per video: λ·PSNR_app + (1−λ)·PSNR_mot, min-max normalised *within the video*, anomaly = 1 − normalised;
4. micro AUC: ``roc_auc_score`` over the scores and labels of all videos concatenated (the published numbers);
   macro AUC: the mean of per-video AUCs over the videos that hold both classes (the others are counted as skipped).

No choice here (checkpoint, λ, smoothing) looks at the labels.

Footage without labels (``labels=None``) gets the same per-frame PSNRs and scores and no AUC. The per-video min-max
score is the published protocol, but it rescales every video to [0, 1] on its own, so only the raw fused PSNR
λ·PSNR_app + (1−λ)·PSNR_mot (lower = more anomalous) is comparable across videos; both are written.

A backend is any object with ``run(clips) -> {"frame_pred", "motion_pred"}`` (see :mod:`m2s2l_edge.runtime.base`);
clips are (B, T, 3, H, W) float32 in [-1, 1], outputs (B, 3, H, W).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from m2s2l_edge.config import ScoreConfig
from m2s2l_edge.evaluation.protocol import AUCResult, drop_unpredicted, frame_auc
from m2s2l_edge.report.frames import KeptFrame, TopFrames
from m2s2l_edge.runtime.base import backend_geometry
from m2s2l_edge.scoring.model import ModelScoring
from m2s2l_edge.scoring.terms import TERMS, BatchTerms, clip_terms

# The scores eval computes: normalised per video (the stream score is normalised by a camera's calibration instead).
VIDEO_SCORES = ("paper", "patch")
DEFAULT_BATCH = 8  # clips per backend call

logger = logging.getLogger(__name__)


def check_video_score(name: str, shown: str) -> None:
    """ValueError unless score ``name`` (``shown`` names it in the message) is one eval computes (per video)."""
    if name not in VIDEO_SCORES:
        raise ValueError(f"{shown} is calibrated per camera on normal footage, not per video: give eval the "
                         f"camera's --calibration FILE (from `m2s2l-edge calibrate`), or score with "
                         f"{' or '.join(VIDEO_SCORES)}")


def eval_score(dataset: str, score: str | None = None, calibrated: str | None = None) -> str:
    """The score eval computes on ``dataset``: ``score`` when given (checked), else the data set's default (the
    published ``paper`` on the paper's data sets and the synthetic one, our ``patch`` on custom footage). With a
    camera's calibration (``calibrated``: the score it was fitted for) the score is that one, and another ``score``
    is refused."""
    from m2s2l_edge.config import default_score_name, get_score

    if calibrated is not None:
        if score is not None and score != calibrated:
            raise ValueError(f"the calibration was fitted for the {calibrated} score, not --score {score}: leave "
                             f"--score out, or calibrate for {score} (which eval normalises per video instead)")
        return calibrated
    if score is None:
        return default_score_name(dataset)
    get_score(score)  # an unknown name fails before any work
    check_video_score(score, f"--score {score}")
    return score


# --- running a backend over the test videos ----------------------------------------------------------------------


@dataclass
class VideoResult:
    name: str
    frames: int  # frames in the video
    targets: np.ndarray  # (N_v - T,) indices of the predicted frames
    psnr_app: np.ndarray  # (N_v - T,)
    psnr_mot: np.ndarray  # (N_v - T,)
    labels: np.ndarray | None  # (N_v,) all labels, for plots; None for unlabelled footage
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (N_v - T,) anomaly score in [0, 1]
    fused: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (N_v - T,) raw λ-fused PSNR in dB
    auc: float | None = None
    terms: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame score terms (TERMS), each (N_v - T,)
    # The frames the model predicted worst (lowest fused PSNR), with their pictures: for the HTML report.
    top_frames: list[KeptFrame] = field(default_factory=list)

    @property
    def scored_labels(self) -> np.ndarray | None:
        return None if self.labels is None else self.labels[self.frames - len(self.targets):]

    @property
    def plot_labels(self) -> np.ndarray:
        """Labels to shade in plots: all zeros (nothing shaded) for unlabelled footage."""
        return np.zeros(self.frames, np.uint8) if self.labels is None else self.labels


@dataclass
class EvalResult:
    auc: AUCResult | None  # None: unlabelled footage, no AUC
    videos: list[VideoResult]
    scoring: ModelScoring  # the score, λ, T, resolution and normal frame change the run used
    seconds: float
    predicted_frames: int
    calibration: object | None = None  # a camera's calibration the scores were normalised by (None: per video)
    calibration_source: str | None = None  # where it came from, e.g. the file

    @property
    def normalisation(self) -> str:
        """How the scores were normalised: per video (min-max, the published protocol) or by a camera's
        calibration (the scores watch computes live: no per-video normalisation, which a camera cannot have)."""
        if self.calibration is None:
            return "per video (min-max over each video, the published protocol)"
        cal = self.calibration
        where = f" {self.calibration_source}" if self.calibration_source else ""
        return (f"camera calibration{where} ({cal.score} score, {cal.smoothing} of {cal.window} frames; threshold "
                f"{cal.threshold:.3f}): the scores watch computes live, no per-video normalisation")

    @property
    def threshold(self) -> float | None:
        return None if self.calibration is None else float(self.calibration.threshold)

    def frames_above_threshold(self, video: VideoResult) -> int | None:
        """How many of ``video``'s frames score at or above the calibration's threshold (None: no calibration)."""
        return None if self.threshold is None else int(np.sum(np.asarray(video.scores) >= self.threshold))

    @property
    def lam(self) -> float:
        return self.scoring.lam

    @property
    def clip_len(self) -> int:
        return self.scoring.clip_len

    @property
    def image_size(self) -> tuple[int, int]:
        return self.scoring.image_size

    @property
    def score(self) -> ScoreConfig:
        return self.scoring.score

    @property
    def normal_change(self) -> float | None:
        return self.scoring.normal_change

    @property
    def motion_reference(self) -> str | None:
        """Where the score's motion term took its normal frame change from (None: the score has no motion term)."""
        if self.score.motion_weight <= 0:
            return None
        if self.normal_change is not None:
            return f"training footage, stored in the model ({self.normal_change:.5f})"
        return "each video's own median (the model stores no training statistics)"

    def as_dict(self) -> dict:
        """JSON-ready summary (no per-frame arrays; those go to <out>/scores/<video>.npy)."""
        auc = self.auc
        skipped = [] if auc is None else [self.videos[i].name for i in auc.skipped]
        return {
            "labelled": auc is not None,
            "micro_auc": None if auc is None else auc.micro,
            "macro_auc": None if auc is None or math.isnan(auc.macro) else auc.macro,
            "videos": len(self.videos),
            "videos_in_macro": 0 if auc is None else auc.videos_in_macro,
            "videos_skipped_in_macro": skipped,
            "lambda": self.lam,
            "lambda_source": self.scoring.lam_source,
            "score": dataclasses.asdict(self.score),
            "normalisation": self.normalisation,
            "threshold": self.threshold,
            "normal_change": self.normal_change,
            "motion_reference": self.motion_reference,
            "clip_len": self.clip_len,
            "image_size": list(self.image_size),
            "predicted_frames": self.predicted_frames,
            "seconds": self.seconds,
            "fps": self.predicted_frames / self.seconds if self.seconds > 0 else None,
            "per_video": [
                {"name": v.name, "frames": v.frames, "scored_frames": len(v.targets),
                 "anomalous_scored_frames": None if v.labels is None else int(v.scored_labels.sum()), "auc": v.auc,
                 "fused_psnr_mean": float(np.mean(v.fused)) if len(v.fused) else None,
                 **({} if self.threshold is None else {
                     "peak_score": float(np.max(v.scores)) if len(v.scores) else None,
                     "frames_above_threshold": self.frames_above_threshold(v)}),
                 "top_frames": [{"frame": f.index, **f.info} for f in v.top_frames]}
                for v in self.videos
            ],
        }


def frame_terms(backend, video, clip_len: int, image_size: tuple[int, int], batch_size: int, patch: int = 8,
                on_batch: Callable[[int], None] | None = None,
                keep: Callable[[np.ndarray, np.ndarray, np.ndarray, BatchTerms], None] | None = None,
                ) -> dict[str, np.ndarray]:
    """Per predicted frame of one video: ``targets`` and every term a score is made of
    (:data:`m2s2l_edge.scoring.terms.TERMS`, computed by :func:`m2s2l_edge.scoring.terms.clip_terms`), each (N - T,).

    ``keep(indices, targets, frame_pred, batch_terms)``: sees every batch while its images are at hand (the report's
    most anomalous frames are kept from here, so nothing is scored twice); targets and frame_pred (B, 3, H, W) in
    model units, ``batch_terms`` the batch's :class:`~m2s2l_edge.scoring.terms.BatchTerms`.
    """
    from m2s2l_edge.data import iter_video_clips

    out: dict[str, list] = {k: [] for k in ("targets", *TERMS)}
    for idx, batch in iter_video_clips(video, clip_len=clip_len, image_size=image_size, batch_size=batch_size):
        clip, target = batch[:, :clip_len], batch[:, clip_len]  # (B, T, 3, H, W), (B, 3, H, W)
        res = backend.run(np.ascontiguousarray(clip.numpy(), dtype=np.float32))
        batch_terms = clip_terms(clip, target, res["frame_pred"], res["motion_pred"], patch)
        terms = batch_terms.terms
        if keep is not None:
            keep(np.asarray(idx), target.numpy(), np.asarray(res["frame_pred"]), batch_terms)
        out["targets"].append(idx)
        for k in TERMS:
            out[k].append(terms[k])
        if on_batch is not None:
            on_batch(len(idx))
    if not out["targets"]:
        return {"targets": np.zeros(0, np.int64), **{k: np.zeros(0) for k in TERMS}}
    return {"targets": np.concatenate(out["targets"]),
            **{k: np.concatenate(out[k]).astype(np.float64) for k in TERMS}}


def evaluate(
    backend,
    videos: Sequence,
    labels: Sequence[np.ndarray] | None,
    lam: float | None = None,
    *,
    batch_size: int = DEFAULT_BATCH,
    on_video: Callable[[int, str, int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    score: str | ScoreConfig | None = None,
    dataset: str | None = None,
    top_frames: int = 0,
    calibration=None,
    calibration_source: str | None = None,
) -> EvalResult:
    """Score every test video with ``backend`` and compute the frame-level AUCs.

    Args:
        backend: anything with ``run(clips) -> {"frame_pred", "motion_pred"}`` and ``inputs`` (see runtime.base).
        videos: the test :class:`~m2s2l_edge.data.VideoSource` objects.
        labels: one (N_v,) 0/1 array per video, covering every frame (the first T are dropped here); None for
            unlabelled footage: scores only, no AUC.
        lam, score, dataset: the score (a name or a ScoreConfig; None: the published ``paper``), an explicit λ and
            the data set the paper's λ is looked up for; resolved with the backend's metadata by
            :func:`m2s2l_edge.scoring.model.model_scoring`, as every other path resolves them.
        on_video(index, name, predicted_frames) / on_batch(clips): progress hooks.
        top_frames: keep this many frames per video, the ones the model predicted worst (lowest fused PSNR of the
            score's terms, at least a few frames apart), with their input, prediction and error map as small JPEGs
            (``VideoResult.top_frames``, for the HTML report); 0 keeps none.

        calibration: a camera's calibration (:class:`m2s2l_edge.watch.calibration.Calibration`: its score
            settings, NormalStats, smoothing and threshold); each video is then scored as that camera scores it live
            (:func:`m2s2l_edge.scoring.stream.camera_scores`), with no per-video normalisation, and the score is the
            calibration's. ``calibration_source`` names it in the results.

    Raises ValueError for labels that do not fit the videos, a λ outside [0, 1] and a score that needs a camera's
    calibration (``stream``) given none.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if not videos:
        raise ValueError("no videos to evaluate")
    if labels is not None and len(videos) != len(labels):
        raise ValueError(f"{len(videos)} test videos but labels for {len(labels)}")
    for v, lab in zip(videos, labels or [], strict=False):
        if len(np.asarray(lab).reshape(-1)) != len(v):
            raise ValueError(f"label/frame count mismatch for video {v.name!r}: {len(np.asarray(lab).reshape(-1))} "
                             f"labels for {len(v)} frames")
    from m2s2l_edge.scoring.model import model_scoring
    from m2s2l_edge.scoring.stream import camera_scores
    from m2s2l_edge.scoring.video import score_fused, video_scores

    if calibration is not None:
        score = calibration.score_config
    scoring = model_scoring(getattr(backend, "metadata", None) or {}, backend_geometry(backend),
                            score=score or "paper", lam=lam, dataset=dataset)
    if calibration is None:
        check_video_score(scoring.score.method, f"the {scoring.score_name} score")
    clip_len, size = scoring.clip_len, scoring.image_size
    tic = time.perf_counter()
    results: list[VideoResult] = []
    for i, video in enumerate(videos):
        if on_video is not None:
            on_video(i, video.name, max(0, len(video) - clip_len))
        keeper = TopFrames(top_frames, gap=max(clip_len + 1, len(video) // 25)) if top_frames > 0 else None
        keep = _keep_worst(keeper, scoring) if keeper is not None else None
        terms = frame_terms(backend, video, clip_len, size, batch_size, scoring.patch, on_batch, keep)
        if len(terms["targets"]) == 0:
            logger.warning("video %r has %d frames, no more than the clip length %d: it gets no score",
                           video.name, len(video), clip_len)
        lab = None if labels is None else np.asarray(labels[i]).reshape(-1)
        results.append(VideoResult(video.name, len(video), terms["targets"], terms["psnr_app"], terms["psnr_mot"], lab,
                                   terms={k: terms[k] for k in TERMS},
                                   top_frames=keeper.frames() if keeper is not None else []))
    seconds = time.perf_counter() - tic
    predicted = sum(len(r.targets) for r in results)
    if predicted == 0:
        raise ValueError(f"no frame can be scored: every video has at most {clip_len} frames, and a prediction needs "
                         f"{clip_len} past frames plus the frame itself")
    if calibration is None:
        scores = [video_scores(r.terms, scoring.score, scoring.normal_change) for r in results]
    else:  # each video as one continuous stretch of the camera's footage
        scores = [camera_scores(r.terms, calibration.stats, calibration.score_config, calibration.smoothing,
                                calibration.window) if len(r.targets) else np.zeros(0) for r in results]
    for r, s in zip(results, scores, strict=True):
        r.scores = s
        r.fused = score_fused(r.terms, scoring.score) if len(r.targets) else np.zeros(0)
        for f in r.top_frames:
            f.info["score"] = round(float(s[int(np.searchsorted(r.targets, f.index))]), 6)
    if labels is None:
        logger.info("%d frames of %d unlabelled videos scored in %.1f s", predicted, len(results), seconds)
        return EvalResult(None, results, scoring, seconds, predicted, calibration, calibration_source)
    kept = drop_unpredicted([r.labels for r in results], clip_len)
    for r, k in zip(results, kept, strict=True):
        assert len(r.scores) == len(k), (r.name, len(r.scores), len(k))  # iter_video_clips predicts frames T .. N-1
    auc = frame_auc(kept, scores)
    for r, a in zip(results, auc.per_video, strict=True):
        r.auc = a
    logger.info("micro AUC %.4f, macro AUC %.4f over %d of %d videos; %d frames in %.1f s",
                auc.micro, auc.macro, auc.videos_in_macro, len(results), predicted, seconds)
    return EvalResult(auc, results, scoring, seconds, predicted, calibration, calibration_source)


def _keep_worst(keeper: TopFrames, scoring: ModelScoring):
    """A :func:`frame_terms` ``keep`` hook offering each frame to ``keeper``, ranked by its fused PSNR under the run's
    score (lower = predicted worse = more anomalous), with its input, prediction and error map as pictures."""
    from m2s2l_edge.report.images import VIDEO_VMAX, error_image, to_uint8
    from m2s2l_edge.scoring.video import score_fused

    def keep(indices: np.ndarray, targets: np.ndarray, frame_pred: np.ndarray, batch: BatchTerms) -> None:
        fused = score_fused(batch.terms, scoring.score)  # (B,) dB
        for i, index in enumerate(indices):
            keeper.offer(int(index), -float(fused[i]), lambda i=i: {
                "frame": to_uint8(targets[i]), "prediction": to_uint8(frame_pred[i]),
                "error": error_image(batch.error_map[i], vmax=VIDEO_VMAX)},
                info={"fused_psnr": round(float(fused[i]), 4), "psnr_app": round(float(batch.terms["psnr_app"][i]), 4),
                      "psnr_mot": round(float(batch.terms["psnr_mot"][i]), 4)})

    return keep


# --- backends ----------------------------------------------------------------------------------------------------
