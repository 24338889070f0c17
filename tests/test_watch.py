"""`m2s2l-edge watch` / `calibrate` with real parts: video files written here, a real ffmpeg serving a live HTTP
stream on 127.0.0.1 (killed and restarted), real PyTorch and ONNX Runtime backends, the CLI's exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from m2s2l_edge.cli.app import app

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="needs ffmpeg (Debian package ffmpeg; .ci/run installs it)")


def write_avi(path: Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    """RGB uint8 frames (N, H, W, 3) → an MJPG .avi (what cv2 writes everywhere)."""
    import cv2

    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_error_line(result) -> str:
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def backend():
    from m2s2l_edge.runtime import create_backend

    return create_backend("torch", None, preset="tiny", seed=0, threads=1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Generated plaza footage at 64 px: two normal videos, and a test video with a fast object entering at frame
    80 and a frozen stretch (frame 139 repeated) on frames 140-189."""
    from m2s2l_edge.data.synthetic import AnomalyEvent, render_video

    root = tmp_path_factory.mktemp("watch_videos")
    normal = render_video(size=64, frames=240, seed=0, index=0, split="train")
    normal2 = render_video(size=64, frames=120, seed=0, index=1, split="train")
    test = render_video(size=64, frames=220, seed=0, index=0, split="test",
                        events=(AnomalyEvent("fast_object", 80), AnomalyEvent("frozen", 140, 50)))
    return {
        "normal": write_avi(root / "normal.avi", normal.frames),
        "normal2": write_avi(root / "normal2.avi", normal2.frames),
        "test": write_avi(root / "test.avi", test.frames),
        "labels": test.labels,
        "events": test.events,
    }


def _watch_scores(backend, sources, **options):
    from m2s2l_edge.watch.cameras import cameras_from_sources
    from m2s2l_edge.watch.pipeline import WatchOptions
    from m2s2l_edge.watch.service import WatchSettings, run_watch

    scores = []
    settings = WatchSettings(cameras=cameras_from_sources([str(s) for s in sources]),
                             options=WatchOptions(replay=True, **options))
    summary = run_watch(backend, settings, model_path=getattr(backend, "path", None),
                        on_score=scores.append)
    return scores, summary


def _eval_terms(backend, path, score="stream"):
    """eval's per-frame terms of one video (evaluation.run.frame_terms), at the patch size the score uses."""
    from m2s2l_edge.data import VideoFileSource
    from m2s2l_edge.evaluation.run import frame_terms
    from m2s2l_edge.watch.scorer import resolve_scoring

    scoring = resolve_scoring(backend, score)
    return frame_terms(backend, VideoFileSource(path), scoring.clip_len, scoring.image_size, 8, scoring.patch), scoring


# --- per-frame terms: watch --replay == eval ---------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 3])
def test_replay_terms_equal_eval_frame_by_frame_torch(backend, videos, stride):
    from m2s2l_edge.scoring.terms import TERMS
    from m2s2l_edge.scoring.video import score_fused

    scores, summary = _watch_scores(backend, [videos["normal2"]], batch=3, stride=stride)
    ref, scoring = _eval_terms(backend, videos["normal2"])
    idx = np.array([s.frame_index for s in scores])
    # eval predicts frames T .. N-1; --stride K scores every K-th of them.
    np.testing.assert_array_equal(idx, ref["targets"][::stride])
    for k in TERMS:
        np.testing.assert_allclose([s.terms[k] for s in scores], ref[k][::stride], rtol=0, atol=1e-4, err_msg=k)
    np.testing.assert_allclose([s.psnr_app for s in scores], ref["psnr_app"][::stride], rtol=0, atol=1e-4)
    # The stream score fuses the worst windows' PSNRs with its own λ (1: the frame stream only).
    assert scoring.score_name == "stream" and scoring.lam == 1.0
    np.testing.assert_allclose([s.fused for s in scores], score_fused(ref, scoring.score)[::stride], atol=1e-4)
    assert summary["cameras"]["cam0"]["dropped_clips"] == 0  # files are read without drops
    assert summary["stopped_by"] == "end of input"


def test_replay_terms_equal_eval_onnxruntime(exports, videos):
    from m2s2l_edge.runtime import create_backend
    from m2s2l_edge.scoring.terms import TERMS

    ort = create_backend("onnxruntime", exports["portable"], threads=1)
    scores, _ = _watch_scores(ort, [videos["normal2"]], batch=4)
    ref, _ = _eval_terms(ort, videos["normal2"])
    np.testing.assert_array_equal([s.frame_index for s in scores], ref["targets"])
    for k in TERMS:
        np.testing.assert_allclose([s.terms[k] for s in scores], ref[k], atol=1e-4, err_msg=k)


def _csv(path) -> dict[str, np.ndarray]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def test_watch_scores_table_has_evals_columns_and_values(tmp_path, exports, videos):
    """The commands themselves: `eval` on a video and `watch --replay --scores` on the same video give the same
    per-frame terms and fused PSNR under the same column names (both compute them with scoring.terms.clip_terms)."""
    from m2s2l_edge.scoring.terms import FRAME_COLUMNS, TERMS

    model = ["--onnx", str(exports["portable"])]
    r = CliRunner().invoke(app, ["eval", *model, "--data", str(videos["normal2"]), "--out", str(tmp_path / "eval"),
                                 "--no-plots"])
    assert r.exit_code == 0, r.output
    table = tmp_path / "frames.csv"
    r = CliRunner().invoke(app, ["watch", *model, "--source", str(videos["normal2"]), "--replay",
                                 "--scores", str(table), "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    ev, wa = _csv(tmp_path / "eval" / "scores" / "normal2.csv"), _csv(table)
    assert list(ev) == list(FRAME_COLUMNS) and set(FRAME_COLUMNS) <= set(wa)
    np.testing.assert_array_equal(wa["frame"].astype(int), ev["frame"].astype(int))
    for k in (*TERMS, "fused_psnr"):
        np.testing.assert_allclose(wa[k].astype(float), ev[k].astype(float), atol=2e-4, err_msg=k)
    assert set(wa["camera"]) == {"cam0"} and np.all(np.diff(wa["stream_time"].astype(float)) > 0)
    # 116 frames: the camera is still calibrating itself (250 frames), so no threshold and no event, and the summary
    # says why.
    assert set(wa["threshold"]) == {""} and set(wa["event_open"]) == {"0"}
    cam = json.loads((tmp_path / "s.json").read_text())["cameras"]["cam0"]
    assert cam["threshold"] is None and "self-calibration has 116 of 250 frames" in cam["calibration"]
    assert "no threshold yet" in r.output and "peak score" in r.output


def test_channel_marks_tell_when_a_cameras_earlier_clips_have_left():
    """ClipChannel.put_count / settled: the watch loop handles a camera's status (offline: its events end) only after
    the clips the camera captured before it have left the channel, taken for scoring or replaced by a newer one."""
    import threading

    from m2s2l_edge.watch.channel import Clip, ClipChannel

    def clip(camera, i):
        return Clip(camera, i, i / 10, 0.0, 0.0, np.zeros((2, 3, 4, 4), np.float32), np.zeros((4, 4, 3), np.uint8))

    channel, stop = ClipChannel(), threading.Event()
    for camera in ("file", "live"):
        channel.add_camera(camera)
    for i in range(3):
        assert channel.put_file(clip("file", i), limit=8, stop=stop)
    mark = channel.put_count("file")
    assert mark == 3 and not channel.settled("file", mark) and channel.settled("live", 0)
    taken = channel.take(2, 0.0)
    assert [c.frame_index for c in taken] == [0, 1] and channel.settled("file", 2) and not channel.settled("file", 3)
    assert [c.frame_index for c in channel.take(4, 0.0)] == [2] and channel.settled("file", mark)
    channel.put_live(clip("live", 0))
    assert channel.put_live(clip("live", 1))  # replaced the waiting one: it is out, dropped
    assert channel.put_count("live") == 2 and channel.settled("live", 1) and not channel.settled("live", 2)


def test_eval_with_a_calibration_scores_each_video_as_watch_does(tmp_path, videos):
    """`eval --calibration C` scores a video as the camera calibrated by C scores it live: frame by frame the same
    smoothed calibrated score as `watch --replay --calibration C --scores` (its last frames too: the loop scores a
    file's last clips before it handles the file's end), no per-video normalisation; results.json says so, gives C's
    threshold and counts the frames at or above it; a score other than C's, the stream score without a
    calibration, or a calibration of other weights is refused in one line."""
    from m2s2l_edge.artifacts.checkpoint import save_checkpoint
    from m2s2l_edge.models import create_model

    weights = tmp_path / "tiny.pt"
    save_checkpoint(weights, create_model("tiny", seed=0))
    model, cal = ["--weights", str(weights)], tmp_path / "cam.calib.json"
    r = CliRunner().invoke(app, ["calibrate", *model, "--source", str(videos["normal"]), "--out", str(cal)])
    assert r.exit_code == 0, r.output
    table = tmp_path / "watch.csv"
    r = CliRunner().invoke(app, ["watch", *model, "--source", str(videos["test"]), "--replay", "--calibration",
                                 str(cal), "--scores", str(table)])
    assert r.exit_code == 0, r.output
    labels = tmp_path / "labels.npy"
    np.save(labels, videos["labels"])
    common = [*model, "--data", str(videos["test"]), "--labels", str(labels), "--no-plots"]
    r = CliRunner().invoke(app, ["eval", *common, "--calibration", str(cal), "--out", str(tmp_path / "eval"),
                                 "--json", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    ev, wa = _csv(tmp_path / "eval" / "scores" / "test.csv"), _csv(table)
    np.testing.assert_array_equal(wa["frame"].astype(int), ev["frame"].astype(int))
    np.testing.assert_allclose(ev["score"].astype(float), wa["score"].astype(float), rtol=0, atol=2e-3)
    result = json.loads((tmp_path / "e.json").read_text())
    threshold = json.loads(cal.read_text())["threshold"]
    assert result["normalisation"].startswith(f"camera calibration {cal} (stream score, mean of 5 frames")
    assert result["threshold"] == threshold and result["score"]["method"] == "stream"
    (video,) = result["per_video"]
    assert video["frames_above_threshold"] == int((wa["score"].astype(float) >= threshold).sum()) > 0
    assert "frames at or above the threshold" in r.output and "concatenated; scored as the camera" in r.output
    assert "Scores are the calibrated camera" in (tmp_path / "eval" / "report.html").read_text(encoding="utf-8")
    # The same footage normalised per video is another score (every video spans 0..1 there).
    r = CliRunner().invoke(app, ["eval", *common, "--out", str(tmp_path / "eval2"), "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    per_video = _csv(tmp_path / "eval2" / "scores" / "test.csv")["score"].astype(float)
    assert per_video.min() == 0.0 and per_video.max() == 1.0 and ev["score"].astype(float).max() > 1.5
    assert json.loads((tmp_path / "p.json").read_text())["threshold"] is None
    r = CliRunner().invoke(app, ["eval", *common, "--calibration", str(cal), "--score", "patch", "--out",
                                 str(tmp_path / "eval3")])
    assert r.exit_code == 1 and "fitted for the stream score, not --score patch" in one_error_line(r)
    r = CliRunner().invoke(app, ["eval", *common, "--score", "stream", "--out", str(tmp_path / "eval4")])
    assert r.exit_code == 1 and "give eval the camera's --calibration FILE" in one_error_line(r)
    other = tmp_path / "other.pt"  # other weights: the calibration belongs to a model, as in watch
    save_checkpoint(other, create_model("tiny", seed=1))
    r = CliRunner().invoke(app, ["eval", "--weights", str(other), *common[2:], "--calibration", str(cal), "--out",
                                 str(tmp_path / "eval5")])
    assert r.exit_code == 1 and f"calibration file {cal} does not fit this model" in one_error_line(r)


def test_an_event_open_at_a_files_end_ends_once_with_end_of_input(tmp_path, videos):
    """A replayed file whose anomaly (a frozen stretch) lasts to its last frame: one event, scored to the last frame
    and ended "end_of_input" (the file ended; no signal was lost), not ended early and opened again by the frames
    still being scored when the file's end arrived."""
    from m2s2l_edge.data.synthetic import AnomalyEvent, render_video

    frozen = render_video(size=64, frames=120, seed=0, index=2, split="test", events=(AnomalyEvent("frozen", 80, 40),))
    path = write_avi(tmp_path / "frozen_to_the_end.avi", frozen.frames)
    cal, events = tmp_path / "cam.calib.json", tmp_path / "events.jsonl"
    r = CliRunner().invoke(app, ["calibrate", "--preset", "tiny", "--source", str(videos["normal"]), "--out", str(cal)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(path), "--replay", "--calibration",
                                 str(cal), "--events", str(events), "--batch", "4"])
    assert r.exit_code == 0, r.output
    anomaly = [m for m in map(json.loads, events.read_text().splitlines()) if m.get("kind") == "anomaly"]
    assert [m["state"] for m in anomaly if m["state"] != "update"] == ["start", "end"], anomaly
    end = anomaly[-1]
    assert end["end_reason"] == "end_of_input" and end["last"]["frame"] == 119


def test_two_cameras_share_backend_calls_but_never_a_clip(backend, videos):
    scores, summary = _watch_scores(backend, [videos["normal2"], videos["test"]], batch=4)
    assert summary["backend"]["mean_batch"] > 1.5  # clips of both cameras went into the same calls
    for cam, path in (("cam0", videos["normal2"]), ("cam1", videos["test"])):
        mine = [s for s in scores if s.camera == cam]
        ref, _ = _eval_terms(backend, path)
        np.testing.assert_array_equal([s.frame_index for s in mine], ref["targets"])
        # A clip mixing the two cameras' frames would predict something else entirely.
        np.testing.assert_allclose([s.psnr_app for s in mine], ref["psnr_app"], atol=1e-4)


# --- a live stream from a real ffmpeg, killed and restarted --------------------------------------------------------


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``, read from /proc (connecting to probe would use up ffmpeg's
    only client)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def _serve(port: int) -> subprocess.Popen:
    """ffmpeg as a one-client HTTP server of an endless live MPEG-TS test pattern, paced in real time; returns once
    it listens. ``-nostdin``: without it ffmpeg watches its standard input for keys, and after some earlier tests in
    one pytest process it quit after 62 frames ("[q] command received") although that input is /dev/null."""
    proc = subprocess.Popen(
        [FFMPEG, "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=96x72:rate=25",
         "-c:v", "mpeg2video", "-q:v", "4", "-g", "5", "-f", "mpegts", "-listen", "1",
         f"http://127.0.0.1:{port}/live.ts"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _listening(port) or proc.poll() is not None, 30, "ffmpeg listening")
    assert proc.poll() is None, "ffmpeg exited at start"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


@needs_ffmpeg
def test_http_stream_killed_and_restarted_reconnects_and_resets_the_ring(backend):
    from m2s2l_edge.watch.cameras import cameras_from_sources
    from m2s2l_edge.watch.pipeline import Watch, WatchHooks, WatchOptions

    port = free_port()
    server = _serve(port)
    statuses, scores = [], []
    first_after_gap: list[int] = []
    watch = None

    def on_capture_status(st):
        if st.online and st.reason == "reconnected":
            # Called before the first frame of the new connection is counted: that frame's index.
            first_after_gap.append(watch.cameras["cam0"].capture.stats.captured - 1)

    try:
        watch = Watch(backend, cameras_from_sources([f"http://127.0.0.1:{port}/live.ts"]),
                      WatchOptions(read_timeout_s=1.0, batch=2),
                      hooks=WatchHooks(score=scores.append, status=statuses.append,
                                       capture_status=on_capture_status))
        stop = threading.Event()
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(watch.run(stop)), daemon=True)
        runner.start()
        wait_for(lambda: len(scores) >= 5, 60, "scored frames of the live stream")
        _stop(server)  # mid-stream
        wait_for(lambda: any(not s.online for s in statuses), 30, "the camera reported offline")
        time.sleep(1.0)  # a reconnect attempt or two fails while nothing listens
        server = _serve(port)
        wait_for(lambda: first_after_gap, 60, "the camera reconnected")
        n = len(scores)
        wait_for(lambda: len(scores) >= n + 5, 60, "scores after the reconnect")
        stop.set()
        runner.join(30)
        assert not runner.is_alive()
    finally:
        _stop(server)
    states = [(s.online, s.reason) for s in statuses]
    assert states[0] == (True, "first frame")
    assert (True, "reconnected") in states
    gap_at = states.index((True, "reconnected"))
    assert any(not online for online, _ in states[:gap_at])
    cam = result["cameras"]["cam0"]
    assert cam["gaps"] >= 1 and cam["reconnects"] >= 1
    # The ring buffer was reset: no clip after the gap reaches back before it (T earlier frames are needed first).
    T = watch.model.clip_len
    after = [s.frame_index for s in scores if s.frame_index >= first_after_gap[0]]
    assert after and min(after) >= first_after_gap[0] + T
    assert not [s for s in scores if first_after_gap[0] - 1 < s.frame_index < first_after_gap[0] + T]


def test_one_camera_failing_never_stops_the_others(backend, videos):
    from m2s2l_edge.watch.cameras import cameras_from_sources
    from m2s2l_edge.watch.pipeline import Watch, WatchHooks, WatchOptions

    dead = f"http://127.0.0.1:{free_port()}/gone.ts"  # nothing listens: every (re)connect fails
    scores = []
    watch = Watch(backend, cameras_from_sources([dead, str(videos["normal2"])]),
                  WatchOptions(replay=True, read_timeout_s=0.5), hooks=WatchHooks(score=scores.append))
    stop = threading.Event()
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(watch.run(stop)), daemon=True)
    runner.start()
    wait_for(lambda: watch.cameras["cam1"].capture.finished.is_set() and len(scores) >= 116, 120,
             "the file camera to be scored to its end")
    wait_for(lambda: watch.cameras["cam0"].capture.stats.reconnects >= 1, 60, "a reconnect attempt of the dead one")
    stop.set()  # the dead camera is live: the watch would go on retrying it forever
    runner.join(30)
    assert not runner.is_alive()
    assert result["cameras"]["cam1"]["scored_frames"] == 120 - 4
    assert result["cameras"]["cam0"]["scored_frames"] == 0
    assert "open failed" in result["cameras"]["cam0"]["last_error"]
    assert result["stopped_by"] == "signal"


# --- calibration ---------------------------------------------------------------------------------------------------


def _correlated_psnr(rng, n: int, rho: float = 0.8) -> np.ndarray:
    """A fused-PSNR-like series: 30 dB plus unit-variance AR(1) noise (consecutive frames are alike)."""
    from scipy.signal import lfilter

    return 30.0 + lfilter([np.sqrt(1 - rho**2)], [1, -rho], rng.normal(0.0, 1.0, n))


def _terms(fused: np.ndarray) -> dict[str, np.ndarray]:
    """Terms whose every PSNR is ``fused`` (so any score's fused PSNR is ``fused``) and a steady frame change."""
    return {"psnr_app": fused, "psnr_mot": fused, "patch_app": fused, "patch_mot": fused,
            "change": np.full(len(fused), 0.02)}


def _paper():
    from m2s2l_edge.config import get_score

    return get_score("paper")


@pytest.mark.parametrize("rho", [0.0, 0.8])
def test_threshold_gives_the_target_false_alarm_rate_on_long_normal_footage(rho):
    from m2s2l_edge.scoring.stream import smooth
    from m2s2l_edge.watch.calibration import fit, upcrossings

    rng = np.random.default_rng(0)
    fps, rate = 25.0, 20.0
    cal = fit(_terms(_correlated_psnr(rng, int(2 * 3600 * fps), rho)), _paper(), fps=fps, false_alarms_per_hour=rate)
    assert cal.threshold_method.startswith("empirical") and cal.warning == ""
    # Four fresh hours of the same camera: alarm starts (up-crossings of the smoothed score) per hour.
    s = smooth(cal.scores(_terms(_correlated_psnr(rng, int(4 * 3600 * fps), rho))), cal.smoothing, cal.window)
    per_hour = upcrossings(s, np.array([cal.threshold]))[0] / 4.0
    assert rate / 2 <= per_hour <= rate * 2, per_hour


@pytest.mark.parametrize("seconds", [8, 120])
def test_short_footage_warns_and_its_threshold_stays_within_reach(seconds):
    from m2s2l_edge.scoring.stream import smooth
    from m2s2l_edge.watch.calibration import EXTRAPOLATION_REACH, fit

    x = _correlated_psnr(np.random.default_rng(1), int(seconds * 25))  # far less than the 3 h that count 1 / h
    cal = fit(_terms(x), _paper(), fps=25.0, false_alarms_per_hour=1.0)
    assert cal.threshold_method.startswith("extrapolated")
    assert f"{seconds:.0f} s of footage is too short" in cal.warning or f"{seconds // 60} min" in cal.warning
    assert "3.0 h would count it" in cal.warning
    s = smooth(cal.scores(_terms(x)), cal.smoothing, cal.window)
    # Never below the footage's own maximum (it should raise no alarm on itself), never out of reach.
    assert s.max() <= cal.threshold <= s.max() + EXTRAPOLATION_REACH * (s.max() - np.median(s)) + 1e-9
    assert cal.stats.center == pytest.approx(np.median(x))


def test_a_threshold_above_what_a_frozen_picture_scores_is_warned():
    """A stream calibration on footage the model fits very tightly (its PSNR barely varies, a few harder frames)
    puts the threshold above the level a stalled picture scores: a frozen camera would raise no event, and the
    calibration says so. On footage with an ordinary spread it does not."""
    from m2s2l_edge.config import get_score
    from m2s2l_edge.scoring.stream import smooth
    from m2s2l_edge.watch.calibration import fit, stall_level

    rng = np.random.default_rng(2)
    n, cfg = 3000, get_score("stream")
    change = 0.02 + rng.normal(0.0, 0.002, n)
    for spread, warned in ((1.0, False), (0.05, True)):
        x = 30.0 + rng.normal(0.0, spread, n)
        x[::50] -= 3.0
        cal = fit({**_terms(x), "change": change}, cfg, fps=10.0, normal_change=0.02)
        level = stall_level(cal.score_config, cal.stats)
        # The level is what a frozen stretch's smoothed score settles at, whatever its PSNRs.
        frozen = {**_terms(np.linspace(10.0, 40.0, 20)), "change": np.zeros(20)}
        assert smooth(cal.scores(frozen), cal.smoothing, cal.window)[-1] == pytest.approx(level)
        assert (cal.threshold >= level) == warned, (cal.threshold, level)
        assert ("a stalled camera would raise no event" in cal.warning) == warned
    assert stall_level(get_score("paper"), cal.stats) is None  # the published score has no stall rule


def test_a_flat_short_tail_never_extrapolates_to_an_unreachable_threshold():
    """The audit's case: a few seconds whose tail has almost no slope extrapolated to 2.4e15."""
    from m2s2l_edge.watch.calibration import threshold_for_rate

    s = np.r_[np.zeros(150), np.linspace(0.0, 2.0, 50)]  # 8 s at 25 fps, a tail that barely falls off
    value, method, warning = threshold_for_rate(s, 25.0, 1.0)
    assert np.isfinite(value) and 2.0 <= value <= 2.0 + 2 * (2.0 - np.median(s)) and warning


def test_calibrate_cli_writes_identity_and_watch_refuses_another_model(tmp_path, videos):
    out = tmp_path / "cam.calib.json"
    r = CliRunner().invoke(app, ["calibrate", "--preset", "tiny", "--source", str(videos["normal"]),
                                 "--out", str(out), "--false-alarms-per-hour", "2"])
    assert r.exit_code == 0, r.output
    cal = json.loads(out.read_text())
    assert cal["score"] == "stream" and cal["score_config"]["method"] == "stream"
    assert cal["model"]["preset"] == "tiny" and cal["model"]["image_size"] == [64, 64]
    assert len(cal["model"]["weights_sha256"]) == 64 and cal["model"]["precision"] == "float"
    assert cal["model"]["clip_len"] == 4 and cal["count"] == 240 - 4
    assert cal["false_alarms_per_hour"] == 2.0 and cal["threshold"] >= 1.0
    assert cal["stream_seconds"] == pytest.approx((240 - 4) / 25.0)
    # 9.4 s of footage cannot show 2 false alarms per hour: said on stderr, and in the file.
    assert "warning: 9 s of footage is too short to show 2 false alarm(s) per hour (1.5 h would count it" in r.output
    assert cal["warning"].startswith("9 s of footage is too short")
    # Refused again without --overwrite.
    r = CliRunner().invoke(app, ["calibrate", "--preset", "tiny", "--source", str(videos["normal"]), "--out", str(out)])
    assert r.exit_code == 1 and "--overwrite" in one_error_line(r)
    # Another model (other weights), another resolution, another score.
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--seed", "1", "--source", str(videos["normal2"]),
                                 "--calibration", str(out), "--replay"])
    assert r.exit_code == 1
    assert f"calibration file {out} does not fit this model: it was made with other weights" in one_error_line(r)
    r = CliRunner().invoke(app, ["watch", "--preset", "small", "--source", str(videos["normal2"]),
                                 "--calibration", str(out), "--replay"])
    assert r.exit_code == 1
    assert "resolution 64x64, the model runs at 128x128" in one_error_line(r)
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(videos["normal2"]), "--score", "paper",
                                 "--calibration", str(out), "--replay"])
    assert r.exit_code == 1
    assert ("it was fitted for the stream score, and this run scores with paper (give --score stream, or calibrate "
            "with --score paper)") in one_error_line(r)


def test_one_calibration_serves_the_checkpoint_and_its_exports(tmp_path, videos, exports):
    """A calibration belongs to the weights, not to a file: made with fresh preset weights, it is accepted for a
    checkpoint of those weights and for their plugin and portable ONNX exports (exported for Ped2: the λ they store
    does not matter to the stream score, whose λ is its own)."""
    from m2s2l_edge.artifacts.checkpoint import save_checkpoint
    from m2s2l_edge.models import create_model

    out = tmp_path / "cam.calib.json"
    r = CliRunner().invoke(app, ["calibrate", "--preset", "tiny", "--seed", "0", "--source", str(videos["normal"]),
                                 "--out", str(out)])
    assert r.exit_code == 0, r.output
    save_checkpoint(tmp_path / "tiny.pt", create_model("tiny", seed=0))
    for model in (["--weights", str(tmp_path / "tiny.pt")], ["--onnx", str(exports["portable"])],
                  ["--onnx", str(exports["plugin"])]):
        r = CliRunner().invoke(app, ["watch", *model, "--source", str(videos["normal2"]), "--calibration", str(out),
                                     "--replay", "--json", str(tmp_path / "s.json")])
        assert r.exit_code == 0, (model, r.output)
        cam = json.loads((tmp_path / "s.json").read_text())["cameras"]["cam0"]
        assert cam["threshold_source"] == f"calibration file {out}" and cam["scored_frames"] == 120 - 4
    # The published score fuses with the model's λ: 0.5 for fresh weights, 0.6 stored in the Ped2 exports.
    r = CliRunner().invoke(app, ["calibrate", "--preset", "tiny", "--score", "paper", "--source",
                                 str(videos["normal"]), "--out", str(tmp_path / "paper.json")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["watch", "--onnx", str(exports["portable"]), "--score", "paper", "--source",
                                 str(videos["normal2"]), "--calibration", str(tmp_path / "paper.json"), "--replay"])
    assert r.exit_code == 1 and "made with λ = 0.5, the model uses λ = 0.6" in one_error_line(r)


def test_precision_beyond_the_parity_tolerance_is_part_of_the_identity():
    from m2s2l_edge.scoring.model import score_precision
    from m2s2l_edge.watch.calibration import ModelIdentity

    assert score_precision({"precision": "fp16"}) == score_precision({"precision": "fp32"}) == "float"
    assert score_precision({"precision": "fp32", "engine": {"precision": "fp16"}}) == "float"
    assert score_precision({"precision": "int8"}) == "int8"
    made = ModelIdentity("ab" * 32, "small", (128, 128), 4, 1.0, "stream", "float", "last.pt")
    assert made.mismatch(made) is None
    int8 = ModelIdentity("ab" * 32, "small", (128, 128), 4, 1.0, "stream", "int8", "m.int8.onnx")
    assert "precision float, the model runs at int8" in made.mismatch(int8)


def test_old_and_foreign_calibration_files_are_one_line(tmp_path, videos):
    old = tmp_path / "old.calib.json"
    old.write_text(json.dumps({"format": "m2s2l-edge-calibration/1", "center": 30.0, "scale": 0.5,
                               "threshold": 3.0}))
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(videos["normal2"]),
                                 "--calibration", str(old), "--replay"])
    assert r.exit_code == 1
    assert "made by an earlier m2s2l-edge" in one_error_line(r) and "calibrate again" in one_error_line(r)


def test_threshold_option_overrides_every_camera_and_the_table_shows_it(tmp_path, videos):
    calib = tmp_path / "cam.calib.json"
    r = CliRunner().invoke(app, ["calibrate", "--preset", "tiny", "--source", str(videos["normal"]),
                                 "--out", str(calib)])
    assert r.exit_code == 0, r.output
    outcome = {}
    for threshold in ("0.5", "1e6"):
        table, summary = tmp_path / f"t{threshold}.csv", tmp_path / f"s{threshold}.json"
        r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(videos["test"]), "--replay",
                                     "--calibration", str(calib), "--threshold", threshold, "--scores", str(table),
                                     "--json", str(summary)])
        assert r.exit_code == 0, r.output
        rows, cam = _csv(table), json.loads(summary.read_text())["cameras"]["cam0"]
        assert cam["threshold"] == float(threshold) and cam["threshold_source"] == "--threshold"
        assert set(rows["threshold"].astype(float)) == {float(threshold)}
        score = rows["score"].astype(float)  # the smoothed score the threshold applies to
        assert cam["frames_above_threshold"] == int(np.sum(score >= float(threshold)))
        assert cam["peak_score"] == pytest.approx(score.max(), abs=1e-5)
        assert int(rows["frame"][np.argmax(score)]) == cam["peak_frame"]
        assert (cam["events"] > 0) == ("1" in set(rows["event_open"]))
        outcome[threshold] = (cam, r.output)
    low, high = outcome["0.5"], outcome["1e6"]
    assert low[0]["events"] > 0 and high[0]["events"] == 0
    # A threshold no frozen picture reaches is said so; the calibration's own (below it) says nothing of the kind.
    assert "a stalled camera would raise no event" in high[0]["calibration_warning"]
    assert "a stalled camera would raise no event" in high[1]
    assert "stalled camera" not in (low[0]["calibration_warning"] or "")
    # A run with no event says why: the threshold, where it came from, and a peak below it.
    assert "threshold 1000000.00 (--threshold)" in high[1] and "0 frames at or above the threshold" in high[1]
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(videos["test"]), "--replay",
                                 "--threshold", "-1"])
    assert r.exit_code == 2 and "--threshold" in r.output


def test_threshold_option_overrides_a_cameras_yaml_threshold_in_the_events_too(tmp_path, videos):
    """One rule decides the level events start at (the camera's scorer): --threshold over the YAML threshold, for
    the summary and the event tracker alike; a level at or below the camera's off level is refused before the
    first frame."""
    calib = tmp_path / "cam.calib.json"
    r = CliRunner().invoke(app, ["calibrate", "--preset", "tiny", "--source", str(videos["normal"]), "--out",
                                 str(calib)])
    assert r.exit_code == 0, r.output
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f"cameras:\n  gate:\n    source: {videos['test']}\n    calibration: {calib}\n"
                   "    threshold: 1000000\n    off_threshold: 0.2\n")
    summaries = {}
    for extra in ([], ["--threshold", "0.5"]):
        out = tmp_path / f"s{len(extra)}.json"
        r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--config", str(cfg), "--replay", "--json",
                                     str(out), *extra])
        assert r.exit_code == 0, r.output
        summaries[len(extra)] = json.loads(out.read_text())["cameras"]["gate"]
    assert summaries[0]["threshold"] == 1e6 and summaries[0]["events"] == 0
    assert summaries[2]["threshold"] == 0.5 and summaries[2]["threshold_source"] == "--threshold"
    assert summaries[2]["events"] > 0  # the tracker started events at --threshold, not at the YAML's level
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--config", str(cfg), "--replay", "--threshold",
                                 "0.1"])
    assert r.exit_code == 1 and "off level 0.2 must be below on level 0.1" in one_error_line(r), r.output


def test_calibrate_refuses_live_sources(tmp_path):
    r = CliRunner().invoke(app, ["calibrate", "--preset", "tiny", "--source", "rtsp://127.0.0.1:9/x",
                                 "--out", str(tmp_path / "c.json")])
    assert r.exit_code == 1 and "recorded footage" in one_error_line(r)


# --- events and faults on a generated stream -----------------------------------------------------------------------


def test_generated_stream_events_overlap_anomalies_and_frozen_stretch_is_a_fault(tmp_path, videos):
    # The published score (an untrained model's frame PSNRs still rise with the fast object's motion); the stream
    # score's own detections are checked below and in benchmarks/vtest_validation.py live.
    calib = tmp_path / "cam.calib.json"
    r = CliRunner().invoke(app, ["calibrate", "--preset", "tiny", "--score", "paper", "--source",
                                 str(videos["normal"]), "--out", str(calib)])
    assert r.exit_code == 0, r.output
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(
        "cameras:\n"
        "  plaza:\n"
        f"    source: {videos['test']}\n"
        f"    calibration: {calib}\n"
        "    events: {min_duration_s: 0.1, cooldown_s: 1.0}\n"
        "    faults: {frozen_s: 0.8}\n"
        "  plaza_normal:\n"
        f"    source: {videos['normal2']}\n"
        f"    calibration: {calib}\n"
    )
    events, summary_path, snaps = tmp_path / "events.jsonl", tmp_path / "summary.json", tmp_path / "snaps"
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--score", "paper", "--config", str(cfg), "--replay",
                                 "--events", str(events), "--json", str(summary_path), "--snapshots", str(snaps)])
    assert r.exit_code == 0, r.output
    msgs = [json.loads(line) for line in events.read_text().splitlines()]
    labels = videos["labels"]
    anomalous = set(np.nonzero(labels)[0].tolist())
    moving = {i for i in anomalous if 80 <= i < 140}
    frozen = set(range(140, 190))
    ends = {m["id"]: m for m in msgs if m["type"] == "event" and m["state"] == "end"}
    anomalies = [m for m in ends.values() if m["kind"] == "anomaly" and m["camera"] == "plaza"]
    assert anomalies, msgs
    spans = [set(range(m["first"]["frame"], m["last"]["frame"] + 1)) for m in anomalies]
    assert any(s & moving for s in spans), spans
    # The frozen stretch predicts *well* (no anomaly score can see it), but it is a camera fault.
    faults = [m for m in ends.values() if m["kind"] == "frozen" and m["camera"] == "plaza"]
    assert len(faults) == 1
    assert set(range(faults[0]["first"]["frame"], faults[0]["last"]["frame"] + 1)) <= frozen | {139}
    # Every event message carries the calibrated and the raw scores.
    peak = anomalies[0]["peak"]
    assert {"score", "psnr_app", "psnr_mot", "fused"} <= set(peak) and peak["score"] > 0
    assert all(Path(m["snapshot"]).is_file() for m in anomalies)
    summary = json.loads(summary_path.read_text())
    assert summary["cameras"]["plaza"]["faults"] == 1
    # False events on normal footage of the same camera are counted, as many as went out (an untrained model is a
    # crude detector: how many there are is measured in benchmarks/bench_watch.py, not asserted here).
    false_starts = [m for m in msgs if m["type"] == "event" and m["camera"] == "plaza_normal"
                    and m["kind"] == "anomaly" and m["state"] == "start"]
    assert summary["cameras"]["plaza_normal"]["events"] == len(false_starts)
    assert summary["cameras"]["plaza"]["events"] == len(anomalies)
    assert summary["cameras"]["plaza_normal"]["scored_frames"] == 120 - 4


def test_stream_score_raises_an_event_on_a_stalled_camera(tmp_path, videos):
    """The stream score flags frames that repeat their predecessor (patch's stall rule, against the model's normal
    change), which a predictor scores as easy: an anomaly event over the frozen stretch, not only a fault."""
    calib, events = tmp_path / "cam.calib.json", tmp_path / "events.jsonl"
    r = CliRunner().invoke(app, ["calibrate", "--preset", "tiny", "--source", str(videos["normal"]), "--out",
                                 str(calib)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(videos["test"]), "--replay",
                                 "--calibration", str(calib), "--events", str(events)])
    assert r.exit_code == 0, r.output
    msgs = [json.loads(line) for line in events.read_text().splitlines()]
    spans = [set(range(m["first"]["frame"], m["last"]["frame"] + 1)) for m in msgs
             if m["type"] == "event" and m["kind"] == "anomaly" and m["state"] == "end"]
    frozen = set(range(140, 190))
    assert any(len(s & frozen) > 25 for s in spans), spans


def test_video_out_has_one_annotated_frame_per_scored_frame(tmp_path, videos):
    import cv2

    out, summary = tmp_path / "annotated.avi", tmp_path / "s.json"
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(videos["normal2"]), "--replay",
                                 "--video-out", str(out), "--json", str(summary)])
    assert r.exit_code == 0, r.output
    cap = cv2.VideoCapture(str(out))
    n, size = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, size = n + 1, frame.shape
    cap.release()
    assert n == json.loads(summary.read_text())["scored_frames"] == 120 - 4
    assert size[1] == 64 and size[0] > 64  # the frame with the score strip below it


MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


@pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (Debian package mosquitto; .ci/run installs it)")
def test_events_reach_mqtt_and_a_webhook(tmp_path, videos):
    paho = pytest.importorskip("paho.mqtt.client", reason="needs paho-mqtt (pip install 'm2s2l-edge[watch]')")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    posted: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    received: list[tuple[str, dict]] = []
    client = None
    try:
        wait_for(lambda: _listening(port), 30, "mosquitto listening")
        client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        client.on_message = lambda c, u, m: received.append((m.topic, json.loads(m.payload)))
        client.connect("127.0.0.1", port)
        client.subscribe("site/#", qos=1)
        client.loop_start()
        cfg = tmp_path / "cameras.yaml"
        cfg.write_text(f"cameras:\n  plaza:\n    source: {videos['test']}\n    faults: {{frozen_s: 0.8}}\n")
        r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--config", str(cfg), "--replay",
                                     "--mqtt", f"mqtt://127.0.0.1:{port}/site",
                                     "--webhook", f"http://127.0.0.1:{http.server_port}/hook"])
        assert r.exit_code == 0, r.output
        wait_for(lambda: any(t == "site/plaza/events" for t, _ in received), 30, "an event on MQTT")
    finally:
        if client is not None:
            client.loop_stop()
            client.disconnect()
        http.shutdown()
        broker.terminate()
        broker.wait(10)
    frozen = [m for t, m in received if t == "site/plaza/events" and m["kind"] == "frozen"]
    assert [m["state"] for m in frozen] == ["start", "end"]
    assert any(t == "site/plaza/status" for t, _ in received)
    # The webhook got the same event messages (close() waited for its queue to drain).
    assert [m["id"] for m in posted if m.get("type") == "event"] == [m["id"] for t, m in received
                                                                       if t == "site/plaza/events"]


# --- signals: clean shutdown, sinks flushed ------------------------------------------------------------------------


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_signal_stops_cleanly_and_flushes(tmp_path, videos, sig, code):
    events, summary = tmp_path / "events.jsonl", tmp_path / "summary.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Paced at 25 fps (no --replay): a 9 s file is still running when the signal comes.
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "m2s2l_edge", "watch", "--preset", "tiny", "--source", str(videos["normal"]),
         "--events", str(events), "--json", str(summary), "--metrics-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: events.exists() and events.read_text().count("\n") >= 1, 120, "the online status line")
        # While it runs, Prometheus can scrape it.
        metrics = ""
        deadline = time.monotonic() + 30
        while "m2s2l_frames_processed_total" not in metrics and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                metrics = resp.read().decode()
            time.sleep(0.2)
        assert 'm2s2l_frames_captured_total{camera="cam0"}' in metrics, metrics
        assert 'm2s2l_camera_online{camera="cam0"} 1.0' in metrics
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert lines[0]["type"] == "status" and lines[0]["online"] is True
    assert lines[-1]["type"] == "status" and lines[-1]["online"] is False  # the last status reached the file
    data = json.loads(summary.read_text())
    assert data["stopped_by"] == "signal" and data["signal"] == sig.name
    assert 0 < data["cameras"]["cam0"]["scored_frames"] < 240 - 4
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if code == 130:
        assert len(errors) == 1 and "interrupted" in errors[0]
    else:
        assert not errors


# --- bad input: one line each ---------------------------------------------------------------------------------------


def test_unreachable_url_is_one_line(tmp_path):
    port = free_port()  # nothing listens there
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", f"http://127.0.0.1:{port}/live.ts",
                                 "--read-timeout", "0.5"])
    assert r.exit_code == 1
    line = one_error_line(r)
    assert "no camera delivered a frame" in line and f"127.0.0.1:{port}" in line


def test_camera_that_never_delivers_a_frame_is_one_line():
    # A server that accepts the connection and then says nothing: the open / read timeouts must end it.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    done = threading.Event()
    held = []

    def accept():
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except (TimeoutError, OSError):
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        tic = time.monotonic()
        r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", f"http://127.0.0.1:{port}/cam",
                                     "--read-timeout", "0.5"])
        elapsed = time.monotonic() - tic
    finally:
        done.set()
        t.join(5)
        for c in held:
            c.close()
        server.close()
    assert r.exit_code == 1
    assert "no camera delivered a frame" in one_error_line(r)
    assert held  # it really connected
    assert elapsed < 60


def test_csi_without_gstreamer_names_the_fix():
    from m2s2l_edge.watch.feeds import gstreamer_available

    if gstreamer_available():
        pytest.skip("this OpenCV has GStreamer: the CSI source would really be opened")
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", "csi://0"])
    assert r.exit_code == 3
    assert "JetPack's OpenCV" in one_error_line(r)


@pytest.mark.parametrize("text,expected", [
    ("", "is empty"),
    ("cameras: [a, b\n", "malformed YAML at line"),
    ("cameras:\n  gate:\n    source: x.avi\n    treshold: 3\n", "unknown key 'treshold'"),
    ("camras:\n  gate: {source: x.avi}\n", "unknown key 'camras'"),
    ("cameras:\n  gate:\n    calibration: c.json\n", "no 'source'"),
    ("cameras:\n  gate:\n    source: x.avi\n    events: {smoothing: bogus}\n", "smoothing must be one of"),
])
def test_bad_yaml_is_one_line(tmp_path, videos, text, expected):
    shutil.copy(videos["normal2"], tmp_path / "x.avi")
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(text)
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--config", str(cfg), "--replay"])
    assert r.exit_code == 1
    assert expected in one_error_line(r)


def test_roi_outside_the_frame_is_one_line(tmp_path, videos):
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f"cameras:\n  gate:\n    source: {videos['normal2']}\n"
                   "    roi: [[0, 0], [100, 0], [100, 30]]\n")
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--config", str(cfg), "--replay"])
    assert r.exit_code == 1
    assert "(100, 0) lies outside the 64x64 frame" in one_error_line(r)


@pytest.mark.parametrize("where", ["folder", "under_a_file"])
def test_unwritable_events_file_is_one_line(tmp_path, videos, where):
    if where == "folder":
        target = tmp_path / "events_dir"
        target.mkdir()
    else:
        (tmp_path / "plain").write_text("x")
        target = tmp_path / "plain" / "events.jsonl"
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(videos["normal2"]), "--replay",
                                 "--events", str(target)])
    assert r.exit_code == 1
    assert "--events" in one_error_line(r)


def test_sources_parse_and_refuse():
    from m2s2l_edge.watch.feeds import parse_source, redact

    assert parse_source("csi://1", "c").kind == "csi"
    assert parse_source("/dev/video2", "c").kind == "usb" and parse_source("0", "c").kind == "usb"
    assert parse_source("rtsp://u:pw@10.0.0.2/s", "c").shown == "rtsp://u:***@10.0.0.2/s"
    assert parse_source("v4l2src ! videoconvert ! appsink", "c").kind == "gstreamer"
    assert redact("http://host/x") == "http://host/x"
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        parse_source("ftp://host/x", "c")
    with pytest.raises(ValueError, match="is no file, folder"):
        parse_source("/no/such/file.avi", "c")


def test_what_a_watch_refuses_before_its_model_loads(tmp_path, videos):
    """The watch's rules as a script calling the library meets them: one way to give cameras, one output on stdout,
    outputs and calibrations checked without a model, and the CLI's one line for each."""
    from m2s2l_edge.watch.cameras import cameras_of
    from m2s2l_edge.watch.service import WatchSettings, check_before_model, check_one_stdout

    video = str(videos["normal2"])
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f"cameras:\n  gate:\n    source: {video}\n")
    for sources, config in (([video], cfg), (None, None), ([], None)):
        with pytest.raises(ValueError, match="either as --source"):
            cameras_of(sources, config)
    assert [c.camera for c in cameras_of([video, video], None)] == ["cam0", "cam1"]
    assert [c.camera for c in cameras_of(None, cfg)] == ["gate"]

    settings = WatchSettings(cameras=cameras_of([video], None), events="-", scores="-")
    with pytest.raises(ValueError, match="--events - and --scores - all want stdout"):
        check_one_stdout(settings)
    check_one_stdout(WatchSettings(cameras=settings.cameras, events="-"), json_out=tmp_path / "s.json")
    with pytest.raises(ValueError, match="--scores - and --json - all want stdout"):
        check_one_stdout(WatchSettings(cameras=settings.cameras, scores="-"), json_out="-")

    (tmp_path / "plain").write_text("x")
    with pytest.raises(NotADirectoryError, match="--snapshots"):
        check_before_model(WatchSettings(cameras=settings.cameras, snapshots=tmp_path / "plain"))
    with pytest.raises(FileNotFoundError):
        check_before_model(WatchSettings(cameras=settings.cameras), tmp_path / "no_calibration.json")
    check_before_model(WatchSettings(cameras=settings.cameras, events=str(tmp_path / "out" / "e.jsonl")))
    assert (tmp_path / "out").is_dir()  # the events file's folder is made up front; the file appears with an event

    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", video, "--config", str(cfg)])
    assert r.exit_code == 1 and "either as --source" in one_error_line(r)
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", video, "--events", "-", "--json", "-"])
    assert r.exit_code == 1 and "all want stdout" in one_error_line(r)


def test_a_served_model_is_retried_through_a_restart_and_the_live_feed_exists_only_when_read(tmp_path, videos):
    from m2s2l_edge.watch.cameras import cameras_from_sources
    from m2s2l_edge.watch.service import WatchSettings, backend_options, live_feed

    assert backend_options("triton")["run_retries"] >= 1000 and backend_options("onnxruntime") == {}
    cameras = cameras_from_sources([str(videos["normal2"])])
    assert live_feed(WatchSettings(cameras=cameras)) is None
    viewed = live_feed(WatchSettings(cameras=cameras), ui=True)
    reported = live_feed(WatchSettings(cameras=cameras, report=tmp_path / "r.html"))
    assert viewed is not None and reported is not None
    # Only the report keeps the most anomalous frames' pictures.
    assert viewed._cams["cam0"].top is None and reported._cams["cam0"].top is not None


def test_import_works_without_any_cv2():
    # A Jetson keeping JetPack's cv2 installs with --no-deps; even with no cv2 at all the package must import.
    code = ("import sys; sys.modules['cv2'] = None\n"
            "import m2s2l_edge, m2s2l_edge.watch, m2s2l_edge.watch.types, m2s2l_edge.watch.feeds\n"
            "import m2s2l_edge.watch.cameras, m2s2l_edge.watch.calibration\n"
            "from m2s2l_edge.cli.app import app\n"
            "from typer.testing import CliRunner\n"
            "r = CliRunner().invoke(app, ['watch', '--help'])\n"
            "assert r.exit_code == 0 and '--source' in r.output, r.output\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


@pytest.mark.parametrize("above", ["m2s2l_edge.cli", "m2s2l_edge.export"])
def test_watch_is_library_code_below_the_cli(above):
    # The pipeline lives in m2s2l_edge.watch; the commands only build its settings. It runs any backend through the
    # runtime interface, so it needs nothing of the export layer either.
    from test_layering import _offenders

    assert _offenders("m2s2l_edge.watch", above) == {}
