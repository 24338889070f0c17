"""Event tracking (hysteresis, minimum duration, cooldown, ROIs, snapshots, clips) and camera faults."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from m2s2l_edge.data.synthetic import AnomalyEvent, render_video
from m2s2l_edge.scoring.terms import region_psnr
from m2s2l_edge.watch.events import EventConfig, EventTracker
from m2s2l_edge.watch.faults import FaultConfig, FaultDetector
from m2s2l_edge.watch.regions import roi_mask
from m2s2l_edge.watch.types import FrameScore

FPS = 10.0
T0 = 1_796_000_000.0  # a fixed wall clock (2026-11-30): ids are then deterministic


def frame_score(i, score, threshold=3.0, frame=None, error_map=None, psnr_mot=30.0, camera="cam0"):
    frame = np.full((48, 64, 3), 100, np.uint8) if frame is None else frame
    error_map = np.full((16, 16), 1e-3, np.float32) if error_map is None else error_map
    psnr_app = 10 * math.log10(1 / float(np.mean(error_map, dtype=np.float64)))
    return FrameScore(
        camera=camera,
        frame_index=i,
        stream_time=i / FPS,
        wall_time=T0 + i / FPS,
        capture_time=i / FPS,
        psnr_app=psnr_app,
        psnr_mot=psnr_mot,
        fused=0.5 * psnr_app + 0.5 * psnr_mot,
        score=float(score),
        threshold=threshold,
        error_map=error_map,
        frame=frame,
    )


def run(tracker, scores, **kw):
    msgs = []
    for i, s in enumerate(scores):
        msgs += tracker.update(frame_score(i, s, **kw))
    return msgs


RAW = dict(smoothing="none", min_duration_s=0.0, cooldown_s=0.0, update_interval_s=0.0)


def test_hysteresis_keeps_an_event_open_between_off_and_on():
    # on = 3 (the calibration's threshold), off = 1: dipping to 2 does not end the event, dropping to 0.5 does.
    scores = [0, 0, 4, 5, 2, 2.5, 6, 2, 0.5, 0, 0]
    msgs = run(EventTracker("cam0", EventConfig(off=1.0, **RAW)), scores)
    assert [m["state"] for m in msgs] == ["start", "update", "update", "end"]
    start, *_, end = msgs
    assert len({m["id"] for m in msgs}) == 1, "one event, one id in every message"
    assert start["first"]["frame"] == 2 and end["last"]["frame"] == 7
    assert end["peak"]["frame"] == 6 and end["peak"]["score"] == 6
    assert end["levels"] == {"on": 3.0, "off": 1.0}
    assert end["end_reason"] == "below_off"
    assert end["duration_s"] == pytest.approx(0.5)
    assert [m["seq"] for m in msgs] == [0, 1, 2, 3]
    # Without hysteresis (off just below on) the same sequence is two events.
    msgs = run(EventTracker("cam0", EventConfig(on=3.0, off=2.9, **RAW)), scores)
    assert [m["state"] for m in msgs] == ["start", "update", "end", "start", "end"]
    assert msgs[0]["id"] != msgs[3]["id"]


def test_default_off_level_is_half_of_the_calibrated_threshold():
    msgs = run(EventTracker("cam0", EventConfig(**RAW)), [0, 4, 1.6, 1.4, 0], threshold=3.2)
    assert [m["state"] for m in msgs] == ["start", "end"]
    assert msgs[-1]["levels"] == {"on": 3.2, "off": 1.6}
    assert msgs[-1]["last"]["frame"] == 2


def test_minimum_duration_drops_short_excursions_and_backdates_the_start():
    cfg = EventConfig(on=3.0, off=1.0, smoothing="none", min_duration_s=0.3, cooldown_s=0.0)
    tracker = EventTracker("cam0", cfg)
    # 0.2 s above (frames 2-4 → 0.2 s of stream time) is too short; frames 8-13 hold for 0.5 s.
    msgs = run(tracker, [0, 0, 5, 5, 5, 0, 0, 0, 5, 4, 4, 4, 4, 5, 0, 0])
    assert [m["state"] for m in msgs] == ["start", "end"]
    start, end = msgs
    assert start["first"]["frame"] == 8, "the event starts where the score crossed on, not where it was confirmed"
    assert start["last"]["frame"] == 11, "the start goes out once the minimum duration has passed (0.3 s)"
    assert end["last"]["frame"] == 13
    assert tracker.stats.short_excursions == 1 and tracker.stats.events == 1
    assert tracker.summary()["frames"] == 16 and not tracker.active
    # 0.6 − 0.4 is 0.19999999999999996 in floating point: still two frame periods at 10 fps.
    cfg = EventConfig(on=3.0, off=1.0, smoothing="none", min_duration_s=0.2, cooldown_s=0.0)
    msgs = run(EventTracker("cam0", cfg), [0, 0, 0, 0, 5, 5, 5, 0])
    assert msgs[0]["state"] == "start" and msgs[0]["last"]["frame"] == 6


def test_cooldown_suppresses_new_events_then_allows_them():
    cfg = EventConfig(on=3.0, off=1.0, smoothing="none", min_duration_s=0.0, cooldown_s=1.0)
    tracker = EventTracker("cam0", cfg)
    scores = [0, 5, 0, 5, 5, 0, 0, 0, 0, 0, 0, 0, 5, 0]  # event at 0.1 s; rise at 0.3 s inside the cooldown; 1.2 s
    msgs = run(tracker, scores)
    starts = [m for m in msgs if m["state"] == "start"]
    assert [m["first"]["frame"] for m in starts] == [1, 12]
    assert tracker.stats.frames_in_cooldown == 2
    ids = [m["id"] for m in starts]
    assert ids[0] != ids[1]
    assert ids == ["cam0-anomaly-20261130T005320.100Z-1", "cam0-anomaly-20261130T005321.200Z-12"]


def test_ids_are_deterministic_for_a_replay():
    scores = [0, 4, 5, 0, 0, 6, 6, 0]
    a = run(EventTracker("lobby/door", EventConfig(**RAW)), scores)
    b = run(EventTracker("lobby/door", EventConfig(**RAW)), scores)
    assert [m["id"] for m in a] == [m["id"] for m in b]
    assert all("/" not in m["id"] for m in a), "ids are safe as file names"
    assert a[0]["camera"] == "lobby/door"
    assert a[0]["first"]["wall_time"] == "2026-11-30T00:53:20.100Z"
    assert a[0]["id"].startswith("lobby_door-anomaly-")


def test_smoothing_ignores_a_one_frame_spike():
    spike = [0, 0, 0, 9, 0, 0, 0]
    assert run(EventTracker("c", EventConfig(**RAW)), spike), "without smoothing the spike is an event"
    cfg = EventConfig(smoothing="median", smoothing_frames=3, min_duration_s=0.0)
    assert run(EventTracker("c", cfg), spike) == []
    cfg = EventConfig(smoothing="mean", smoothing_frames=5, min_duration_s=0.0)
    assert run(EventTracker("c", cfg), spike) == [], "mean of 5: 9/5 = 1.8 < 3"
    held = [0, 0, 6, 6, 6, 6, 6, 0, 0, 0, 0, 0, 0]
    msgs = run(EventTracker("c", cfg), held)
    assert [m["state"] for m in msgs] == ["start", "end"], "no update within update_interval_s (1 s)"
    # Window means: frame 3 reaches (0 + 0 + 6 + 6) / 4 = 3 = on; the smoothed score is what crosses the levels.
    assert msgs[0]["first"]["frame"] == 3 and msgs[0]["peak"] == dict(msgs[0]["peak"], score=3.0, raw_score=6.0)
    assert msgs[1]["peak"]["score"] == 6.0 and msgs[1]["peak"]["frame"] == 6
    assert msgs[1]["last"]["frame"] == 9, "frame 9's mean (6 + 6 + 0 + 0 + 0) / 5 = 2.4 is still above off = 1.5"


def test_close_ends_an_open_event_with_its_reason_and_resets():
    tracker = EventTracker("cam0", EventConfig(**RAW))
    msgs = run(tracker, [0, 5, 5])
    assert [m["state"] for m in msgs] == ["start"]
    assert tracker.active
    end = tracker.close("signal_lost")
    assert not tracker.active
    assert [m["state"] for m in end] == ["end"] and end[0]["end_reason"] == "signal_lost"
    assert end[0]["id"] == msgs[0]["id"]
    assert tracker.close() == []
    # A stream that restarts (stream time going back) closes the open event first.
    run(tracker, [0, 5])
    msgs = tracker.update(frame_score(0, 0))
    assert [m["end_reason"] for m in msgs] == ["stream_restart"]


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="off .* must be below on"):
        EventConfig(on=2.0, off=3.0)
    with pytest.raises(ValueError, match="smoothing must be one of"):
        EventConfig(smoothing="gauss")
    with pytest.raises(ValueError, match="min_duration_s must be a number >= 0"):
        EventConfig(min_duration_s=-1)
    with pytest.raises(ValueError, match="ROI 0 must be a list of at least 3"):
        EventConfig(rois=[[(0, 0), (1, 1)]])
    with pytest.raises(ValueError, match="ROI 0 has zero area"):
        EventConfig(rois=[[(0, 0), (1, 1), (2, 2)]])
    with pytest.raises(ValueError, match="unknown event setting.*thresold; allowed: on, off"):
        EventConfig.from_mapping({"thresold": 3})
    cfg = EventConfig.from_mapping({"on": 4, "rois": [[[0, 0], [64, 0], [64, 48]]]})
    assert cfg.rois == (((0.0, 0.0), (64.0, 0.0), (64.0, 48.0)),)
    with pytest.raises(ValueError, match="ROIs need the calibration's score function"):
        EventTracker("cam0", cfg)
    with pytest.raises(ValueError, match="snapshot folder /nonexistent/snaps does not exist"):
        EventTracker("cam0", EventConfig(), media_dir="/nonexistent/snaps")


def test_roi_outside_the_frame_is_refused_on_the_first_frame():
    cfg = EventConfig(rois=[[(10, 10), (70, 10), (70, 40)]], **RAW)
    tracker = EventTracker("cam0", cfg, score_fn=lambda fs, mask: 0.0)
    with pytest.raises(ValueError, match=r"camera 'cam0': ROI 0 point \(70, 10\) lies outside the 64x48 frame"):
        tracker.update(frame_score(0, 0))


def calibrated(app, mot, center=30.0, scale=0.5):
    """A calibration's mapping: score = (center − fused) / scale with λ = 0.5."""
    return (center - (0.5 * app + 0.5 * mot)) / scale


def test_roi_score_comes_from_the_error_map_inside_the_roi():
    err = np.full((16, 16), 1e-3, np.float32)  # PSNR 30 dB everywhere ...
    err[0:4, 12:16] = 0.05  # ... except a bad patch in the top-right corner (frame pixels x 48..64, y 0..12)
    whole = [(0, 0), (64, 0), (64, 48), (0, 48)]
    top_right = [(44, 0), (64, 0), (64, 16), (44, 16)]
    bottom_left = [(0, 30), (20, 30), (20, 48), (0, 48)]

    full_mask = roi_mask(whole, err.shape, (48, 64))
    assert full_mask.all()
    fs = frame_score(0, 0, error_map=err)
    assert region_psnr(err, full_mask) == pytest.approx(fs.psnr_app, abs=1e-4), "whole-frame ROI = PSNR_app"
    assert region_psnr(err, roi_mask(bottom_left, err.shape, (48, 64))) == pytest.approx(30.0, abs=1e-3)

    def events_with(polys):
        cfg = EventConfig(on=3.0, off=1.0, rois=polys, **{k: v for k, v in RAW.items()})
        tracker = EventTracker("cam0", cfg,
                               score_fn=lambda fs, mask: calibrated(region_psnr(fs.error_map, mask), fs.psnr_mot))
        calm = np.full((16, 16), 1e-3, np.float32)
        msgs = []
        for i in range(6):
            e = err if 2 <= i <= 3 else calm
            msgs += tracker.update(frame_score(i, score=0.0, error_map=e))
        return msgs

    msgs = events_with([top_right])
    assert [m["state"] for m in msgs] == ["start", "end"]
    assert msgs[0]["first"]["frame"] == 2 and msgs[1]["last"]["frame"] == 3
    assert msgs[0]["roi"] == 0 and msgs[0]["peak"]["score"] > 3
    assert events_with([bottom_left]) == [], "the anomaly lies outside this ROI"
    msgs = events_with([bottom_left, top_right])
    assert msgs and msgs[0]["roi"] == 1, "the event names the ROI with the largest score"


def test_roi_smaller_than_one_error_map_pixel_is_never_empty():
    mask = roi_mask([(10, 10), (11, 10), (11, 11)], (16, 16), (480, 640))
    assert mask.sum() == 1


def scene(i, anomalous=False):
    """A textured 96x128 frame with a moving square; anomalous frames carry a red block at x 80..112, y 16..48."""
    rng = np.random.default_rng(i)
    f = np.clip(90 + rng.normal(0, 4, (96, 128, 3)), 0, 255).astype(np.uint8)
    f[40:56, (2 * i) % 100 : (2 * i) % 100 + 16] = 200
    if anomalous:
        f[16:48, 80:112] = (255, 0, 0)
    return f


def test_snapshot_is_a_heat_map_jpeg_of_the_peak_frame(tmp_path):
    tracker = EventTracker("cam0", EventConfig(**RAW), media_dir=tmp_path)
    msgs = []
    for i, s in enumerate([0, 4, 7, 5, 0]):
        err = np.full((24, 32), 1e-4, np.float32)
        if s:
            err[4:12, 20:28] = 0.02 * s  # error where the red block is (frame pixels x 80..112, y 16..48)
        msgs += tracker.update(frame_score(i, s, frame=scene(i), error_map=err))
    start, *_, end = msgs
    path = tmp_path / f"{start['id']}.jpg"
    assert start["snapshot"] == str(path) == end["snapshot"]
    assert end["peak"]["frame"] == 2
    img = cv2.imread(str(path))
    assert img is not None and img.shape == (96, 128, 3)
    # The heat map is hot over the error region and leaves the rest of the frame as it was.
    hot, calm = img[20:44, 84:108].astype(float), img[70:90, 10:40].astype(float)
    assert hot[..., 2].mean() > 150 and abs(calm.mean() - 90) < 15
    assert not list(tmp_path.glob(".*.tmp")), "written atomically, no temporary left"


def test_clip_covers_pre_and_post_roll_and_arrives_with_the_end(tmp_path):
    cfg = EventConfig(pre_roll_s=0.5, post_roll_s=0.5, clip=True, snapshot=False, **RAW)
    tracker = EventTracker("cam0", cfg, media_dir=tmp_path)
    scores = [0] * 10 + [5] * 5 + [0] * 20  # event on frames 10..14 at 10 fps
    msgs = []
    end_at = None
    for i, s in enumerate(scores):
        new = tracker.update(frame_score(i, s, frame=scene(i, s > 0)))
        if any(m["state"] == "end" for m in new):
            end_at = i
        msgs += new
    msgs += tracker.close()
    assert [m["state"] for m in msgs][0] == "start" and msgs[-1]["state"] == "end"
    end = msgs[-1]
    assert end_at is None or end_at >= 20, "the end message waits for the post-roll (frames up to 14 + 5)"
    assert end["snapshot"] is None
    cap = cv2.VideoCapture(end["clip"])
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, first = cap.read()
    cap.release()
    # Frames 5..19: 0.5 s before the first anomalous frame to 0.5 s after the last.
    assert ok and first.shape == (96, 128, 3)
    assert n == end["clip_frames"] == 15
    assert msgs[0]["clip"] == end["clip"]


def test_clip_buffer_is_bounded_for_a_long_event(tmp_path):
    cfg = EventConfig(pre_roll_s=1.0, post_roll_s=1.0, clip=True, snapshot=False, max_clip_frames=8, **RAW)
    tracker = EventTracker("cam0", cfg, media_dir=tmp_path)
    msgs = []
    for i, s in enumerate([0] * 10 + [5] * 60 + [0] * 15):
        msgs += tracker.update(frame_score(i, s, frame=scene(i)))
        clips = tracker._clips
        assert len(clips._roll) <= 8 and all(len(c.frames) <= 8 for c in clips._collecting)
    msgs += tracker.close()
    end = msgs[-1]
    assert end["state"] == "end" and end["clip_frames"] == 8
    cap = cv2.VideoCapture(end["clip"])
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 8
    cap.release()


# ---------------------------------------------------------------------------------------------------- faults


def live(i, rng, noise=2.0, motion=True):
    """A noisy camera frame; with motion, a 12x12 block walks across it."""
    base = np.tile(np.linspace(40, 200, 160, dtype=np.float32), (120, 1))[..., None].repeat(3, 2)
    if motion:
        x = (3 * i) % 140
        base[50:62, x : x + 12] = 20
    return np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)


def feed(detector, frames, fps=FPS):
    msgs = []
    for i, f in enumerate(frames):
        msgs += detector.check(f, i, i / fps, T0 + i / fps)
    return msgs


def through_codec(frames, path, fourcc):
    """Encode RGB frames with a real OpenCV codec and decode them again (what a camera's stream delivers)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f[..., ::-1])
    cap.release()
    assert len(out) == len(frames)
    return out


@pytest.mark.parametrize("fourcc, ext", [("mp4v", ".mp4"), ("MJPG", ".avi")])
def test_frozen_feed_through_a_codec_is_one_fault(tmp_path, fourcc, ext):
    rng = np.random.default_rng(0)
    # 2 s live, a 3 s stall (frame 19 delivered again), 2 s live — encoded and decoded by a real codec, whose key
    # frames re-quantise the stalled picture (mp4v: every 12 frames).
    frames = [live(i, rng) for i in range(20)] + [None] * 30 + [live(i, rng) for i in range(50, 70)]
    frames[20:50] = [frames[19]] * 30
    decoded = through_codec(frames, tmp_path / f"stall{ext}", fourcc)
    det = FaultDetector("cam0", FaultConfig(frozen_s=1.0, clear_s=0.5))
    msgs = feed(det, decoded)
    assert [(m["kind"], m["state"]) for m in msgs] == [("frozen", "start"), ("frozen", "end")], msgs
    start, end = msgs
    assert start["id"] == end["id"] and start["camera"] == "cam0"
    assert 20 <= start["first"]["frame"] <= 22, "the fault is dated from the first repeated frame"
    assert start["last"]["frame"] - start["first"]["frame"] >= 10, "after frozen_s = 1 s at 10 fps"
    assert 47 <= end["last"]["frame"] <= 49 and end["end_reason"] == "cleared"
    assert end["detail"]["tile_diff"] < 0.5


def test_a_noisy_still_scene_and_duplicated_frames_are_not_frozen(tmp_path):
    # A live camera looking at a still scene: sensor noise alone keeps every frame different (MJPG keeps it).
    rng = np.random.default_rng(1)
    still = through_codec([live(0, rng, noise=1.5, motion=False) for _ in range(60)], tmp_path / "still.avi", "MJPG")
    det = FaultDetector("cam0", FaultConfig(frozen_s=1.0))
    assert feed(det, still) == []
    assert det.last_stats.tile_diff > 0.5
    # A feed that sends every frame twice (a 5 fps camera read at 10 fps) is half repeats: not a stall.
    moving = [live(i // 2, rng) for i in range(60)]
    assert feed(FaultDetector("cam0", FaultConfig(frozen_s=1.0)), moving) == []


def test_frozen_stall_in_generated_surveillance_video():
    video = render_video(size=96, frames=90, seed=3, split="test", events=[AnomalyEvent("frozen", 30, 40)])
    det = FaultDetector("plaza", FaultConfig(frozen_s=1.0))
    msgs = feed(det, list(video.frames), fps=25.0)
    assert [(m["kind"], m["state"]) for m in msgs] == [("frozen", "start"), ("frozen", "end")]
    labelled = np.flatnonzero(video.labels)
    assert msgs[0]["first"]["frame"] == labelled[0] == 30
    assert msgs[1]["last"]["frame"] == 69, "the last repeated frame"
    assert msgs[1]["last"]["stream_time"] - msgs[0]["first"]["stream_time"] == pytest.approx(39 / 25)


def test_black_and_saturated_frames_with_noise():
    rng = np.random.default_rng(2)
    dark = [np.clip(rng.normal(6, 3, (120, 160, 3)), 0, 255).astype(np.uint8) for _ in range(25)]
    glare = [np.clip(rng.normal(250, 3, (120, 160, 3)), 0, 255).astype(np.uint8) for _ in range(25)]
    frames = [live(i, rng) for i in range(10)] + dark + [live(i, rng) for i in range(20)] + glare
    frames += [live(i, rng) for i in range(20)]
    det = FaultDetector("cam0", FaultConfig(min_duration_s=1.0, clear_s=0.5))
    msgs = feed(det, frames)
    assert [(m["kind"], m["state"]) for m in msgs] == [
        ("black", "start"),
        ("black", "end"),
        ("saturated", "start"),
        ("saturated", "end"),
    ]
    b0, b1, s0, s1 = msgs
    assert b0["first"]["frame"] == 10 and b0["last"]["frame"] == 20, "starts once held for min_duration_s"
    assert b1["last"]["frame"] == 34 and b1["detail"]["dark_fraction"] >= 0.98
    assert s0["first"]["frame"] == 55 and b0["id"] != s0["id"]
    # A dark but structured night scene is not black.
    night = np.clip(live(0, rng) * 0.25, 0, 255).astype(np.uint8)
    assert feed(FaultDetector("cam0"), [night] * 30) == []


def test_signal_lost_follows_the_capture_and_resets_the_frozen_check():
    rng = np.random.default_rng(3)
    det = FaultDetector("cam0", FaultConfig(frozen_s=1.0))
    f = live(0, rng)
    msgs = feed(det, [f] * 5)  # 0.4 s of repeats: not yet frozen
    msgs += det.set_online(False, T0 + 1.0, stream_time=0.5, reason="read timeout")
    assert [(m["kind"], m["state"]) for m in msgs] == [("signal_lost", "start")]
    assert msgs[0]["detail"] == {"reason": "read timeout"} and det.active == ["signal_lost"]
    back = det.set_online(True, T0 + 4.0, stream_time=3.5)
    assert [(m["kind"], m["state"], m["end_reason"]) for m in back] == [("signal_lost", "end", "online")]
    assert back[0]["id"] == msgs[0]["id"]
    # After the gap the same picture is a new first frame, not the continuation of a stall.
    for i in range(5, 12):
        assert det.check(f, i, 3.5 + (i - 5) / FPS, T0 + 4 + i / FPS) == []
    assert det.close() == []


def test_fault_config_validation():
    with pytest.raises(ValueError, match="unknown fault kind.*smoke; valid: frozen, black"):
        FaultConfig(kinds=("frozen", "smoke"))
    with pytest.raises(ValueError, match="unknown fault setting.*frozen_seconds"):
        FaultConfig.from_mapping({"frozen_seconds": 3})
    with pytest.raises(ValueError, match="frame must be \\(H, W, 3\\) uint8"):
        FaultDetector("cam0").check(np.zeros((10, 10), np.uint8), 0, 0.0, T0)
    only_black = FaultDetector("cam0", FaultConfig(kinds=("black",), min_duration_s=0.0))
    msgs = feed(only_black, [np.zeros((20, 20, 3), np.uint8)] * 30)
    assert [m["kind"] for m in msgs] == ["black"], "a black feed is also a repeat, but only black is reported"


# ---------------------------------------------------------------------------------------------------- annotated video


def test_annotated_video_has_the_heat_map_and_a_score_strip(tmp_path):
    from m2s2l_edge.watch.annotate import STRIP_HEIGHT, AnnotatedVideo

    out = tmp_path / "annotated.mp4"
    video = AnnotatedVideo(out, fps=FPS, vmax=0.02)
    for i in range(12):
        err = np.full((24, 32), 1e-4, np.float32)
        if i >= 6:
            err[4:12, 20:28] = 0.05
        video.write(scene(i), err, score=float(i), threshold=3.0, label="cam0", active=i >= 6)
        assert not out.exists(), "the file appears under its name only when complete"
    assert video.close() == out
    cap = cv2.VideoCapture(str(out))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert len(frames) == 12 and frames[0].shape == (96 + STRIP_HEIGHT, 128, 3)
    last = frames[-1].astype(float)
    assert last[20:44, 84:108, 2].mean() > 150, "red heat over the error region"
    assert abs(last[70:90, 10:40].mean() - 90) < 20, "the rest of the frame is the frame"
    strip = last[96:]
    assert (strip[..., 1] > 150).sum() > 10, "the score curve is drawn in the strip"


def test_annotated_video_refuses_bad_outputs(tmp_path):
    from m2s2l_edge.watch.annotate import AnnotatedVideo

    with pytest.raises(ValueError, match="folder .* does not exist"):
        AnnotatedVideo(tmp_path / "no" / "v.mp4", fps=10)
    with pytest.raises(ValueError, match="unknown container '.gif'"):
        AnnotatedVideo(tmp_path / "v.gif", fps=10)
    with pytest.raises(ValueError, match="fps must be > 0"):
        AnnotatedVideo(tmp_path / "v.mp4", fps=0)


def test_one_roi_parser_and_one_bounds_check_for_yaml_and_events():
    """A camera's YAML ``roi`` and an ``events: rois`` entry go through the same parser (same shapes, same bounds)."""
    from m2s2l_edge.watch.cameras import _roi
    from m2s2l_edge.watch.regions import check_rois_fit, parse_rois

    bare = [[0, 0], [10, 0], [10, 5]]
    assert _roi(bare, "roi") == parse_rois(bare) == parse_rois([bare]) == (((0.0, 0.0), (10.0, 0.0), (10.0, 5.0)),)
    for bad, text in (([[0, 0], [-1, 0], [10, 5]], "finite numbers >= 0"), ([[0, 0], [5, 0], [10, 0]], "zero area"),
                      ([[0, 0], [5, 0]], "at least 3")):
        with pytest.raises(ValueError, match=text):
            parse_rois([bad])
        with pytest.raises(ValueError, match=f"cameras.gate: roi: .*{text}"):
            _roi([bad], "cameras.gate: roi")
    with pytest.raises(ValueError, match=r"camera 'gate': ROI 0 point \(10, 0\) lies outside the 8x8 frame"):
        check_rois_fit(parse_rois(bare), 8, 8, "gate")
