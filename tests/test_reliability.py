"""Nothing lost, nothing leaked: the failure cases of the reliability audit (issue 21), each with real parts.

Classes (the reliability table in benchmarks/RESULTS.md counts them): a full disk (a real tmpfs, mounted here; the
cases skip where mounting is impossible), secrets in URLs (real HTTP servers, a real mosquitto with a password, real
watch processes), calibrations (see test_calibration_files_*), events lost without a word (outputs on outputs or on
inputs, webhook redirects, duplicate cameras), lifecycle (real watch processes signalled during start-up and mid-run,
a real ffmpeg stream, a mosquitto restarted during a run, exit codes). Rerun them all: ``pytest -m reliability``.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from m2s2l_edge.cli.app import app

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]
FFMPEG = shutil.which("ffmpeg")
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
# The secrets every leak case plants: a password holding '@' and a token in the query string.
PASSWORD = "p@ss:w0rd"
TOKEN = "Tok3nSecret"
SECRETS = ("p@ss", "w0rd", TOKEN)


def no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked in: {text[:2000]}"


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


def one_error_line(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    return lines[0]


def json_lines(path: Path) -> list[dict]:
    """Every line of ``path`` parsed: fails on any line that is not one JSON object (a torn or glued record)."""
    text = path.read_bytes().decode("utf-8")
    assert text == "" or text.endswith("\n"), f"{path} ends in a torn line: {text[-200:]!r}"
    out = []
    for i, line in enumerate(text.splitlines()):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{path} line {i + 1} is not JSON: {line[:200]!r}") from None
        assert isinstance(out[-1], dict)
    return out


def write_avi(path: Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    import cv2

    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """Generated plaza footage, 64 px, 60 frames (2.4 s at 25 fps)."""
    from m2s2l_edge.data.synthetic import render_video

    root = tmp_path_factory.mktemp("reliability")
    return write_avi(root / "plaza.avi", render_video(size=64, frames=60, seed=0, index=0, split="train").frames)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """240 frames: 9.6 s paced at 25 fps, so a watch is still running when a test signals it."""
    from m2s2l_edge.data.synthetic import render_video

    root = tmp_path_factory.mktemp("reliability_long")
    return write_avi(root / "plaza_long.avi", render_video(size=64, frames=240, seed=0, index=1, split="train").frames)


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def watch_process(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "m2s2l_edge", "watch", "--preset", "tiny", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# ================================================================================================ a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB tmpfs (tests run as root here and in CI); skipped with the reason where mounting is impossible."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True,
                           text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a tmpfs for the full-disk cases: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full-disk cases (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` with one file, to the last byte or leaving about ``leave`` bytes free;
    returns it (delete it to free the space)."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 512, 64, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
        if leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
    finally:
        os.close(fd)
    st = os.statvfs(folder)
    assert st.f_bavail * st.f_frsize <= leave + st.f_frsize
    return filler


def fill_page(path: Path, slack: int) -> None:
    """JSON lines of an earlier run in ``path``, ending ``slack`` bytes short of a page: on a full disk the next
    records only partly fit in that last page."""
    lines = [json.dumps(record(i)) + "\n" for i in range(21)]
    short = (-sum(len(x) for x in lines) - slack) % 4096
    lines[-1] = json.dumps({**record(20), "padding": "x" * (120 + short)}) + "\n"
    path.write_text("".join(lines))
    assert path.stat().st_size % 4096 == 4096 - slack


def record(i: int) -> dict:
    return {"type": "event", "schema": 1, "id": f"cam0-anomaly-x-{i}", "camera": "cam0", "kind": "anomaly",
            "state": "start", "seq": 0, "padding": "x" * 120}


def test_events_file_on_a_full_disk_stays_valid_json_lines(small_disk, caplog):
    from m2s2l_edge.watch.sinks import JsonlSink, SinkSet

    events = small_disk / "events.jsonl"
    # An earlier run's lines, then a disk full to the last byte: the next records fit only in part.
    events.write_text("".join(json.dumps(record(i)) + "\n" for i in range(20)))
    filler = fill(small_disk)
    sink = JsonlSink(events)
    sinks = SinkSet([sink])
    with caplog.at_level("WARNING"):
        for i in range(20, 80):
            sinks.emit(record(i))
    sinks.close()
    lines = json_lines(events)
    assert sink.stats.failed > 0 and sink.stats.lines == len(lines) - 20
    assert "No space left" in sink.stats.last_error
    reported = [r for r in caplog.records if "could not be written" in r.getMessage()]
    assert len(reported) == 1, "reported once, not once per record"
    assert sinks.summary()["JsonlSink"]["failed"] == sink.stats.failed and sinks.errors == {}
    # Room again: the next run appends whole lines after the last complete one.
    filler.unlink()
    second = JsonlSink(events)
    for i in range(80, 85):
        second.emit(record(i))
    second.close()
    ids = [r["id"] for r in json_lines(events)]
    assert ids[-5:] == [f"cam0-anomaly-x-{i}" for i in range(80, 85)]


def test_a_torn_last_line_left_by_a_crash_is_repaired_on_the_next_open(tmp_path, caplog):
    from m2s2l_edge.watch.sinks import JsonlSink

    events = tmp_path / "events.jsonl"
    whole = json.dumps(record(0)) + "\n"
    # What a process killed in the middle of a write leaves: the first bytes of a record, no newline.
    events.write_text(whole + json.dumps(record(1))[:37])
    with caplog.at_level("WARNING"):
        sink = JsonlSink(events)
    sink.emit(record(2))
    sink.close()
    assert [r["id"] for r in json_lines(events)] == ["cam0-anomaly-x-0", "cam0-anomaly-x-2"]
    assert sink.stats.repaired_bytes == 37
    assert any("torn" in r.getMessage() for r in caplog.records)
    # A record complete but for its newline is kept, not cut.
    events.write_text(whole + json.dumps(record(3)))
    sink = JsonlSink(events)
    sink.emit(record(4))
    sink.close()
    assert [r["id"] for r in json_lines(events)] == ["cam0-anomaly-x-0", "cam0-anomaly-x-3", "cam0-anomaly-x-4"]


def test_two_watch_runs_on_a_full_disk_leave_valid_json_lines(small_disk, video):
    """The audit's check: the events file on a full tmpfs, two watch runs, every line valid JSON."""
    events = small_disk / "events.jsonl"
    fill_page(events, 60)  # the first status line (about 130 bytes) fits only in part
    filler = fill(small_disk)
    runner = CliRunner()
    first = runner.invoke(app, ["watch", "--preset", "tiny", "--source", str(video), "--replay", "--events",
                                str(events), "--json", str(small_disk.parent / "s1.json")])
    assert first.exit_code == 0, first.output
    s1 = json.loads((small_disk.parent / "s1.json").read_text())
    assert s1["sinks"]["JsonlSink"]["failed"] >= 1, "the lost records are in the summary"
    json_lines(events)
    filler.unlink()
    second = runner.invoke(app, ["watch", "--preset", "tiny", "--source", str(video), "--replay", "--events",
                                 str(events)])
    assert second.exit_code == 0, second.output
    lines = json_lines(events)
    assert lines[-1]["type"] == "status" and lines[-1]["online"] is False


def _frames(n: int, h: int = 240, w: int = 320) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_a_clip_the_disk_could_not_take_is_never_published(small_disk):
    from m2s2l_edge.watch.annotate import check_video, write_clip

    fill(small_disk, leave=100_000)  # room to open the file and write a few frames, not to finish it
    target = small_disk / "cam0-anomaly-20260101T000000.000Z-5.mp4"
    with pytest.raises(OSError, match="full disk"):
        write_clip(target, _frames(40), 25.0)
    assert not target.exists(), "an unfinished clip (no moov atom) was renamed into place"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler.bin"], "its temporary was left behind"
    (small_disk / "filler.bin").unlink()
    write_clip(target, _frames(10, 60, 80), 25.0)
    check_video(target, 10)


def test_an_annotated_video_the_disk_could_not_take_is_never_published(small_disk):
    from m2s2l_edge.watch.annotate import AnnotatedVideo

    out = small_disk / "annotated.mp4"
    video = AnnotatedVideo(out, fps=25.0)
    fill(small_disk, leave=100_000)  # room to open the file and write a few frames, not to finish it
    for f in _frames(30):
        video.write(f, np.random.default_rng(1).random((16, 16), dtype=np.float32) * 0.02, score=1.0, threshold=3.0)
    with pytest.raises(OSError, match="full disk"):
        video.close()
    assert not out.exists()
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler.bin"]


@pytest.mark.slow
def test_the_video_out_temporary_of_a_killed_run_is_removed_by_the_next_run(tmp_path, long_video):
    out = tmp_path / "annotated.mp4"
    events = tmp_path / "events.jsonl"
    proc = watch_process("--source", str(long_video), "--video-out", str(out), "--events", str(events))
    try:
        wait_for(lambda: list(tmp_path.glob(".annotated*tmp*")), 120, "the annotated video's temporary")
        time.sleep(0.5)
        proc.kill()  # no clean shutdown: the temporary stays behind
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = list(tmp_path.glob(".annotated*tmp*"))
    assert left and not out.exists()
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(long_video), "--replay",
                                 "--video-out", str(out)])
    assert r.exit_code == 0, r.output
    assert not list(tmp_path.glob(".annotated*tmp*")), "the killed run's temporary is still there"
    from m2s2l_edge.watch.annotate import check_video

    check_video(out, 240 - 4)


# ------------------------------------------------------------------------------------------------- retention


def _tracker_events(tracker, n_events: int, start_index: int = 0, wall0: float = 1_800_000_000.0):
    """Feed ``tracker`` ``n_events`` separate anomalies (a high score for 1 s, then normal for 7 s) at 10 fps."""
    from m2s2l_edge.watch.types import FrameScore

    rng = np.random.default_rng(start_index)
    base = np.broadcast_to(np.linspace(0, 200, 160, dtype=np.uint8)[None, :, None], (120, 160, 3))
    msgs = []
    for k in range(n_events * 80):
        i = start_index + k
        high = (k % 80) < 10
        frame = base.copy()
        frame[50:70, 70:90] = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)  # something moving
        fs = FrameScore(camera=tracker.camera, frame_index=i, stream_time=i / 10, wall_time=wall0 + i / 10,
                        capture_time=0.0, psnr_app=30.0, psnr_mot=30.0, fused=30.0, score=10.0 if high else 0.0,
                        threshold=3.0, error_map=rng.random((16, 16), dtype=np.float32) * 0.02, frame=frame)
        msgs += tracker.update(fs)
    return msgs + tracker.close()


def test_retention_orders_by_the_event_not_by_when_a_clip_was_finished(tmp_path):
    # A clip is written by a thread and may be finished after the next event's snapshot: the older event still goes
    # first.
    import os

    from m2s2l_edge.watch.retention import Limit, MediaStore

    store = MediaStore(tmp_path, Limit(max_bytes=2500), {"gate": Limit()})
    names = ["gate-anomaly-20270115T080000.000Z-10.jpg", "gate-anomaly-20270115T080010.000Z-110.jpg",
             "gate-anomaly-20270115T080000.000Z-10.mp4"]  # event 1's clip published last
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(b"x" * 1000)
        os.utime(tmp_path / name, (1_900_000_000 + i, 1_900_000_000 + i))
        assert store.added("gate", tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [names[2], names[1]]  # event 1's snapshot went first
    (tmp_path / "gate-anomaly-20270115T080020.000Z-210.jpg").write_bytes(b"x" * 1000)
    assert store.added("gate", tmp_path / "gate-anomaly-20270115T080020.000Z-210.jpg")
    assert names[2] not in {p.name for p in tmp_path.iterdir()}  # then event 1's clip, though it is the newest file


def test_retention_keeps_snapshots_and_clips_within_the_limits_oldest_first(tmp_path):
    from m2s2l_edge.watch.events import EventConfig, EventTracker
    from m2s2l_edge.watch.retention import Limit, MediaStore

    media = tmp_path / "snaps"
    media.mkdir()
    (media / "notes.txt").write_text("a user's own file: never touched")
    store = MediaStore(media, Limit(max_bytes=250_000), {"gate": Limit(max_bytes=100_000), "yard": Limit()})
    cfg = EventConfig(smoothing="none", min_duration_s=0.2, cooldown_s=1.0, clip=True, pre_roll_s=0.5,
                      post_roll_s=0.5)
    gate = EventTracker("gate", cfg, media_dir=media, media=store)
    yard = EventTracker("yard", cfg, media_dir=media, media=store)

    def written(msgs) -> list[str]:
        ends = [m for m in msgs if m.get("state") == "end" and m["kind"] == "anomaly"]
        assert len(ends) == 12
        return [Path(m[key]).name for m in ends for key in ("snapshot", "clip") if m[key]]

    def kept() -> dict[str, int]:
        return {p.name: p.stat().st_size for p in media.iterdir() if p.name != "notes.txt"}

    gate_files = written(_tracker_events(gate, 12))
    assert sum(kept().values()) <= 100_000, "gate's own limit"
    assert [n in kept() for n in gate_files] == sorted(n in kept() for n in gate_files), "oldest first"
    assert gate_files[-1] in kept() and gate_files[0] not in kept()
    yard_files = written(_tracker_events(yard, 12, start_index=5000))
    ours = kept()
    assert (media / "notes.txt").exists(), "a file of another name was touched"
    assert sum(ours.values()) <= 250_000, "the total limit"
    flags = [n in ours for n in gate_files + yard_files]
    assert flags == sorted(flags), "a newer file was deleted before an older one"
    assert yard_files[-1] in ours
    summary = store.summary()
    assert summary["bytes"] == sum(ours.values()) and summary["files"] == len(ours)
    assert summary["cameras"]["gate"]["deleted_files"] > 0 and summary["cameras"]["yard"]["deleted_files"] > 0
    # Files of an earlier run count at the next start, and an age limit removes the old ones.
    old = sorted(media.glob("yard-*"))[0]
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    again = MediaStore(media, Limit(max_bytes=250_000, max_age_s=3600), {"gate": Limit(), "yard": Limit()})
    assert not old.exists() and again.summary()["deleted_files"] == 1


def test_the_default_retention_cannot_fill_a_disk(small_disk):
    from m2s2l_edge.watch.events import EventConfig, EventTracker
    from m2s2l_edge.watch.retention import MediaStore

    store = MediaStore(small_disk)
    assert store.total.max_bytes <= 0.25 * 2 * 2**20 and store.summary()["max_bytes_from"] == "default"
    tracker = EventTracker("cam0", EventConfig(smoothing="none", min_duration_s=0.2, cooldown_s=1.0, clip=True),
                           media_dir=small_disk, media=store)
    _tracker_events(tracker, 15)
    st = os.statvfs(small_disk)
    assert st.f_bavail * st.f_frsize >= store.reserve, "the file system's reserve was used up"
    assert store.summary()["bytes"] <= store.total.max_bytes
    assert store.summary()["deleted_files"] > 0


def test_watch_reports_retention_in_the_summary_and_the_metrics(tmp_path, video):
    summary = tmp_path / "summary.json"
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f"cameras:\n  gate:\n    source: {video}\n    keep_mb: 5\n    keep_hours: 48\n")
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--config", str(cfg), "--replay", "--snapshots",
                                 str(tmp_path / "snaps"), "--keep-mb", "20", "--keep-hours", "24", "--json",
                                 str(summary)])
    assert r.exit_code == 0, r.output
    media = json.loads(summary.read_text())["media"]
    assert media["max_bytes"] == 20 * 2**20 and media["max_age_s"] == 24 * 3600
    assert media["cameras"]["gate"]["max_bytes"] == 5 * 2**20 and media["cameras"]["gate"]["max_age_s"] == 48 * 3600
    assert "snapshots and clips:" in r.output

    from m2s2l_edge.watch.retention import Limit, MediaStore
    from m2s2l_edge.watch.sinks import JsonlSink, SinkSet
    from m2s2l_edge.watch.telemetry import Telemetry

    tel = Telemetry()
    store = MediaStore(tmp_path / "snaps", Limit(max_bytes=1 << 20))
    sinks = SinkSet([JsonlSink("/dev/full")])
    sinks.emit(record(0))
    tel.attach("media", store.summary)
    tel.attach("sinks", sinks.summary)
    port = tel.serve(0)
    try:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    finally:
        tel.close()
        sinks.close()
    assert "m2s2l_media_limit_bytes 1.048576e+06" in text
    assert 'm2s2l_sink_messages_total{outcome="failed",sink="JsonlSink"} 1.0' in text


def test_atomic_writes_fsync_before_the_rename(tmp_path, monkeypatch):
    """Checkpoints, exports, calibrations and engines go through io.atomic_path: the bytes must reach the device
    before the rename makes them the file (a spy records the real calls in order; both still run)."""
    import m2s2l_edge.io as io

    calls: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        calls.append(("replace", str(a)))
        return real_replace(a, b)

    monkeypatch.setattr(io.os, "fsync", fsync)
    monkeypatch.setattr(io.os, "replace", replace)
    target = tmp_path / "model.pt"
    io.atomic_write_bytes(target, b"weights")
    assert target.read_bytes() == b"weights"
    kinds = [k for k, _ in calls]
    assert "replace" in kinds
    tmp = next(p for k, p in calls if k == "replace")
    assert ("fsync", tmp) in calls and calls.index(("fsync", tmp)) < kinds.index("replace")
    assert ("fsync", str(tmp_path)) in calls[kinds.index("replace"):], "the folder's entry is synced after"


# ================================================================================================ secrets


def test_redaction_masks_a_password_with_any_characters_and_secret_query_values():
    from m2s2l_edge.urls import redact, redact_text, split_credentials
    from m2s2l_edge.watch.feeds import parse_source

    assert redact("http://admin:p@ss@host/x") == "http://admin:***@host/x"
    assert parse_source(f"rtsp://admin:{PASSWORD}@10.0.0.5:554/s", "c").shown == "rtsp://admin:***@10.0.0.5:554/s"
    assert redact("http://cam/snap.cgi?user=admin&pwd=s3cret&ch=1") == "http://cam/snap.cgi?user=admin&pwd=***&ch=1"
    for name in ("password", "PASS", "passwd", "access_token", "api_key", "Auth", "client_secret", "X-Amz-Signature"):
        assert redact(f"https://h/x?{name}={TOKEN}&a=1") == f"https://h/x?{name}=***&a=1"
    assert redact(f"https://{TOKEN}@h/x") == "https://***@h/x"
    assert redact(f"http://admin:pa/ss?{TOKEN}@h:80/x") == "http://admin:***@h:80/x"
    assert redact("rtsp://10.0.0.5/stream1") == "rtsp://10.0.0.5/stream1"
    assert redact_text(f"open failed: cannot open 'http://u:{PASSWORD}@h/x?token={TOKEN}'") == \
        "open failed: cannot open 'http://u:***@h/x?token=***'"
    assert split_credentials(f"http://admin:{PASSWORD}@h:8/x?a=1") == ("http://h:8/x?a=1", "admin", PASSWORD)


def test_every_log_line_of_the_command_is_redacted_whoever_wrote_it():
    """A library's own log line quoting a URL (paho, urllib3 and tritonclient log their targets) goes through the
    same redaction as ours once the command has configured logging."""
    import io
    import logging

    from m2s2l_edge.cli.app import _RedactURLs

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(_RedactURLs())
    log = logging.getLogger("some.library")
    log.addHandler(handler)
    try:
        log.warning("connecting to %s failed", f"http://admin:{PASSWORD}@10.0.0.5/a?token={TOKEN}")
    finally:
        log.removeHandler(handler)
    assert stream.getvalue() == "connecting to http://admin:***@10.0.0.5/a?token=*** failed\n"


@pytest.mark.slow
def test_a_password_in_a_camera_url_reaches_no_log_summary_or_file(tmp_path, video):
    """A camera that never opens (its URL: a password with '@', a token in the query) beside a file camera: the
    reconnect log lines, the printed summary, summary.json and the events file carry neither secret."""
    dead = f"http://admin:{PASSWORD}@127.0.0.1:{free_port()}/video.cgi?user=admin&pwd={TOKEN}"
    events, summary = tmp_path / "events.jsonl", tmp_path / "summary.json"
    proc = watch_process("--source", dead, "--source", str(video), "--replay", "--read-timeout", "0.3",
                         "--events", str(events), "--json", str(summary))
    try:
        wait_for(lambda: events.exists() and "end of stream" in events.read_text(), 120, "the file camera's end")
        time.sleep(1.5)  # a few reconnect attempts of the dead camera
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "reconnecting" in err and "cam0" in out, (out, err)
    data = summary.read_text()
    assert "admin:***@127.0.0.1" in json.loads(data)["cameras"]["cam0"]["source"]
    no_secret(out, err, data, events.read_text())


class _Recorder(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that records each request (method, path, headers, body) and answers by rule."""

    def __init__(self, answer):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                outer.requests.append(req)
                status, headers = answer(req)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _any  # noqa: N815 - http.server's naming

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.daemon_threads = True
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.server_port}"


@pytest.fixture
def recorder():
    made = []

    def make(answer):
        made.append(_Recorder(answer))
        return made[-1]

    yield make
    for s in made:
        s.shutdown()
        s.server_close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_webhook_credentials_go_as_basic_auth_and_never_into_logs(recorder, caplog):
    from m2s2l_edge.watch.sinks import WebhookSink

    def answer(req):
        ok = req["headers"].get("Authorization") == basic("admin", PASSWORD)
        return (204 if ok else 401), {}

    server = recorder(answer)
    sink = WebhookSink(f"http://admin:{PASSWORD}@{server.base}/hook?token={TOKEN}", retries=0, timeout=5)
    with caplog.at_level("DEBUG"):
        for i in range(3):
            sink.emit(record(i))
        sink.close()
        failing = WebhookSink(f"http://admin:wrong@{server.base}/hook?token={TOKEN}", retries=0, timeout=5)
        failing.emit(record(9))
        failing.close()
    assert sink.stats.sent == 3 and sink.stats.failed == 0
    assert [json.loads(r["body"])["id"] for r in server.requests[:3]] == [f"cam0-anomaly-x-{i}" for i in range(3)]
    assert server.requests[0]["path"] == f"/hook?token={TOKEN}", "the receiver still gets its query"
    assert failing.stats.failed == 1
    assert any("not delivered" in r.getMessage() for r in caplog.records)
    no_secret(*(r.getMessage() for r in caplog.records))
    with pytest.raises(ValueError) as bad:
        WebhookSink(f"http://admin:{PASSWORD}@127.0.0.1:notaport/hook?token={TOKEN}")
    no_secret(str(bad.value))


def test_mqtt_credentials_with_an_at_sign_log_in_and_never_show(tmp_path, video):
    if MOSQUITTO is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs mosquitto and mosquitto_passwd (Debian package mosquitto)")
    pytest.importorskip("paho.mqtt.client", reason="needs paho-mqtt (pip install 'm2s2l-edge[watch]')")
    from m2s2l_edge.watch.sinks import MqttSink, parse_mqtt_url

    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "admin", PASSWORD], check=True,
                   capture_output=True)
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    # Run as root (tests here and in CI), mosquitto drops to its own user before it reads the password file, which
    # could not then reach pytest's owner-only temporary folder: stay the user that started it.
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
                    f"persistence false\nuser {pwd.getpwuid(os.getuid()).pw_name}\n")
    broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _accepting(port), 30, "mosquitto listening")
        sink = MqttSink(f"mqtt://admin:{PASSWORD}@127.0.0.1:{port}/site", connect_timeout=10)
        sink.status("cam0", True, {})
        sink.close()
        with pytest.raises(ValueError) as refused:
            MqttSink(f"mqtt://admin:wrong{TOKEN}@127.0.0.1:{port}/site", connect_timeout=5)
        assert "did not accept" in str(refused.value)
        no_secret(str(refused.value))
    finally:
        broker.terminate()
        broker.wait(10)
    for url in (f"mqtt://admin:{PASSWORD}@h:99999/x", f"mqtt://admin:{PASSWORD}@h/a/#", f"mqtts://admin:{PASSWORD}"):
        with pytest.raises(ValueError) as bad:
            parse_mqtt_url(url)
        no_secret(str(bad.value))
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(video), "--mqtt",
                                 f"mqtt://admin:{PASSWORD}@127.0.0.1:1/x?token={TOKEN}"])
    assert r.exit_code == 1
    no_secret(one_error_line(r.output))


def _accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_triton_server_url_credentials_go_as_basic_auth_and_never_show(recorder, video):
    pytest.importorskip("tritonclient.http", reason="needs tritonclient (pip install 'm2s2l-edge[serve]')")
    # A server that answers the liveness check and refuses the rest: the client must have sent the credentials.
    server = recorder(lambda req: (200, {}) if req["path"].endswith("/health/live") else (500, {}))
    for args in ([f"http://admin:{PASSWORD}@{server.base}"],
                 [f"http://admin:{PASSWORD}@{server.base}/?token={TOKEN}"],
                 [f"grpc://admin:{PASSWORD}@127.0.0.1:{free_port()}"]):
        r = CliRunner().invoke(app, ["watch", "--server", *args, "--model", "m2s2l", "--source", str(video)])
        assert r.exit_code in (1, 3), r.output
        no_secret(one_error_line(r.output))
    assert server.requests, "the client never reached the server"
    assert server.requests[0]["headers"].get("Authorization") == basic("admin", PASSWORD)


# ================================================================================================ events lost


def test_events_and_json_on_one_file_are_refused_before_any_work(tmp_path, video):
    same = tmp_path / "out.json"
    same.write_text("keep me\n")
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(video), "--replay",
                                 "--events", str(same), "--json", str(same)])
    assert r.exit_code == 1
    assert "--events and --json are the same file" in one_error_line(r.output)
    assert same.read_text() == "keep me\n"


def test_events_on_the_input_video_are_refused(tmp_path, video):
    copy = shutil.copy(video, tmp_path / "input.avi")
    before = Path(copy).read_bytes()
    for events in (copy, tmp_path / "elsewhere" / ".." / "input.avi"):
        r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(copy), "--replay",
                                     "--events", str(events)])
        assert r.exit_code == 1
        assert "is the input --source" in one_error_line(r.output)
    # Not JSON lines at all (a video named through another path, a link): refused when the sink opens.
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "input.avi")
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(video), "--replay",
                                 "--events", str(link)])
    assert r.exit_code == 1
    assert "holds something other than JSON lines" in one_error_line(r.output)
    assert Path(copy).read_bytes() == before


def test_table_markdown_and_out_on_one_file_are_refused(tmp_path):
    same = tmp_path / "t.png"
    r = CliRunner().invoke(app, ["table", "--markdown", str(same), "--out", str(same)])
    assert r.exit_code == 1
    assert "--markdown and --out are the same file" in one_error_line(r.output)
    assert not same.exists()
    r = CliRunner().invoke(app, ["table", "--markdown", str(tmp_path / "t.md"), "--json", str(tmp_path / "t.md")])
    assert r.exit_code == 1 and "same file" in one_error_line(r.output)


def test_a_camera_defined_twice_in_the_yaml_is_refused(tmp_path, video):
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f"cameras:\n  gate:\n    source: {video}\n  yard:\n    source: {video}\n"
                   f"  gate:\n    source: {video}\n    threshold: 4\n")
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--config", str(cfg), "--replay"])
    assert r.exit_code == 1
    assert "camera 'gate' is defined twice (lines 2 and 6)" in one_error_line(r.output)


@pytest.mark.parametrize("code", [301, 302, 303])
def test_a_webhook_redirect_that_would_drop_the_body_counts_as_failed(recorder, code, caplog):
    from m2s2l_edge.watch.sinks import WebhookSink

    target = recorder(lambda req: (204, {}))
    moved = recorder(lambda req: (code, {"Location": f"http://{target.base}/new?token={TOKEN}"}))
    sink = WebhookSink(f"http://{moved.base}/hook", retries=0, timeout=5)
    with caplog.at_level("WARNING"):
        sink.emit(record(0))
        sink.close()
    assert sink.stats.sent == 0 and sink.stats.failed == 1
    assert not target.requests, "the receiver got a GET without the event"
    assert any(f"HTTP {code} redirect" in r.getMessage() for r in caplog.records)
    no_secret(*(r.getMessage() for r in caplog.records))


@pytest.mark.parametrize("code", [307, 308])
def test_a_webhook_redirect_that_keeps_the_method_is_followed_with_the_body(recorder, code):
    from m2s2l_edge.watch.sinks import WebhookSink

    target = recorder(lambda req: (204, {}))
    moved = recorder(lambda req: (code, {"Location": f"http://{target.base}/new"}))
    sink = WebhookSink(f"http://admin:{PASSWORD}@{moved.base}/hook", retries=0, timeout=5)
    sink.emit(record(0))
    sink.close()
    assert sink.stats.sent == 1
    (req,) = target.requests
    assert req["method"] == "POST" and json.loads(req["body"])["id"] == "cam0-anomaly-x-0"
    assert "Authorization" not in req["headers"], "credentials went along to another host"


# ================================================================================================ lifecycle


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_metrics_port_out_of_range_is_a_usage_error(port, video):
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(video), "--metrics-port", port])
    assert r.exit_code == 2, r.output
    assert "--metrics-port" in r.output


def test_mqtt_camera_status_is_retained_again_after_a_broker_restart(tmp_path):
    from test_watch_sinks import Broker, Subscriber

    if MOSQUITTO is None:
        pytest.skip("needs mosquitto (Debian package mosquitto)")
    pytest.importorskip("paho.mqtt.client", reason="needs paho-mqtt (pip install 'm2s2l-edge[watch]')")
    from m2s2l_edge.watch.sinks import MqttSink

    broker = Broker(MOSQUITTO, tmp_path)
    broker.start()
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/site", client_id="restart-test")
    try:
        sink.status("gate", True, {"reason": "first frame"})
        broker.stop()  # persistence off: the restarted broker holds no retained message
        broker.start()
        wait_for(lambda: sink._connections >= 2, 30, "the sink to reconnect")
        late = Subscriber(broker.port, "site/+/status")
        try:
            wait_for(lambda: late.on("site/gate/status"), 15, "the retained camera status")
            status, retained = late.on("site/gate/status")[0]
            assert retained and status["online"] is True and status["reason"] == "first frame"
        finally:
            late.stop()
    finally:
        sink.close()
        broker.stop()


def _silent_server():
    """A TCP server that accepts connections and never answers (a camera stuck while opening)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept():
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except (TimeoutError, OSError):
                continue

    threading.Thread(target=accept, daemon=True).start()

    def close():
        done.set()
        for c in held:
            c.close()
        server.close()

    return server.getsockname()[1], held, close


@pytest.mark.slow
def test_sigterm_while_a_camera_is_still_opening_exits_0_at_once(tmp_path):
    port, held, close = _silent_server()
    events = tmp_path / "events.jsonl"
    try:
        # --read-timeout 5: the open waits 10 s for a server that says nothing.
        proc = watch_process("--source", f"http://127.0.0.1:{port}/cam", "--read-timeout", "5", "--events",
                             str(events))
        try:
            wait_for(lambda: held, 120, "the camera connecting")
            time.sleep(0.3)
            tic = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = finish(proc, 30)
            took = time.monotonic() - tic
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        close()
    assert proc.returncode == 0, err
    assert took < 3.0, f"SIGTERM took {took:.1f} s (the open timeout is 10 s)"
    assert not [ln for ln in err.splitlines() if ln.startswith("error:")], err
    json_lines(events)


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (the SigCgt mask of /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.slow
def test_sigterm_while_the_model_loads_exits_0_at_once(tmp_path, video):
    events = tmp_path / "events.jsonl"
    proc = watch_process("--source", str(video), "--events", str(events))
    # Past the interpreter's own start-up (before the command runs no handler can exist): the moment the command
    # catches SIGTERM, read from the kernel, it goes on to import torch and build the model.
    wait_for(lambda: proc.poll() is not None or catches_sigterm(proc.pid), 120, "the command's signal handler")
    assert proc.poll() is None
    tic = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc, 30)
    took = time.monotonic() - tic
    assert proc.returncode == 0, err
    assert took < 3.0, f"SIGTERM took {took:.1f} s"
    assert "stopped by SIGTERM during start-up; nothing was scored" in err, (out, err)
    assert "Traceback" not in err and not [ln for ln in err.splitlines() if ln.startswith("error:")], err


@pytest.mark.slow
@pytest.mark.skipif(FFMPEG is None, reason="needs ffmpeg (Debian package ffmpeg)")
def test_sigterm_mid_run_on_a_live_camera_is_quick_clean_and_raises_no_fault(tmp_path):
    from test_watch import _serve, _stop

    from m2s2l_edge.watch.events import iso_time

    port = free_port()
    server = _serve(port)
    events, summary = tmp_path / "events.jsonl", tmp_path / "summary.json"
    try:
        proc = watch_process("--source", f"http://127.0.0.1:{port}/live.ts", "--events", str(events), "--json",
                             str(summary), "--read-timeout", "2")
        try:
            wait_for(lambda: events.exists() and '"online":true' in events.read_text(), 120, "the camera online")
            time.sleep(2.0)  # scoring
            sent, tic = time.time(), time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = finish(proc, 30)
            took = time.monotonic() - tic
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        _stop(server)
    lines = json_lines(events)
    lost = [m for m in lines if m.get("kind") == "signal_lost"]
    # A fault that began before the signal means the stream itself ended or stalled: a real fault, but one that says
    # nothing about the stop (the server quit after 62 frames until _serve passed -nostdin).
    why = ("the stream ended or stalled before the stop"
           if any(m["first"]["wall_time"] < iso_time(sent) for m in lost) else "raised by the stop")  # ISO UTC sorts
    assert proc.returncode == 0, err
    assert took < 3.0, f"SIGTERM took {took:.1f} s"
    assert not lost, f"a signal_lost fault ({why}): {lost}"
    assert lines[-1]["type"] == "status" and lines[-1]["online"] is False and lines[-1]["reason"] == "stopped"
    data = json.loads(summary.read_text())
    assert data["stopped_by"] == "signal" and data["faults"] == 0 and data["scored_frames"] > 0


# ================================================================================================ calibrations


def _calibration(**fields) -> dict:
    """A calibration file's JSON as `calibrate` writes it, with ``fields`` replaced ("stats.scale": a section's)."""
    from m2s2l_edge.config import get_score
    from m2s2l_edge.scoring.stream import NormalStats
    from m2s2l_edge.watch.calibration import Calibration

    cal = Calibration(score="stream", score_config=get_score("stream"), stats=NormalStats(30.0, 0.5, 0.01, 0.002),
                      threshold=3.0, false_alarms_per_hour=1.0, window=5, smoothing="mean", fps=25.0, count=500,
                      stream_seconds=20.0).to_dict()
    for key, value in fields.items():
        section, _, name = key.rpartition(".")
        (cal[section] if section else cal)[name] = value
    return cal


@pytest.mark.parametrize("field,value,expected", [
    ("stats.scale", float("inf"), "stats.scale must be a finite number > 0, got inf"),
    ("stats.center", float("nan"), "stats.center must be a finite number, got nan"),
    ("threshold", "4.5", "threshold must be a finite number > 0, got '4.5'"),
    ("window", "five", "window must be an integer >= 1, got 'five'"),
    ("window", 2.5, "window must be an integer >= 1, got 2.5"),
    ("smoothing", "gauss", "smoothing must be one of mean, median, ema, none"),
    ("score_config.motion_weight", "0.25", "score_config.motion_weight must be a number in [0, 1], got '0.25'"),
    ("threshold", 1e17, "threshold 1e+17 can never be reached"),
])
def test_a_bad_calibration_field_is_one_error_line(tmp_path, video, field, value, expected):
    cal = tmp_path / "cam.calib.json"
    cal.write_text(json.dumps(_calibration(**{field: value})))  # Infinity / NaN as Python's json writes them
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(video), "--replay",
                                 "--calibration", str(cal)])
    assert r.exit_code == 1, r.output
    line = one_error_line(r.output)
    assert str(cal) in line and expected in line, line


def test_calibrate_never_writes_a_threshold_no_frame_can_reach(tmp_path):
    """The audit's footage, 8 s whose upper tail a log-linear fit extrapolated to 1e17: the threshold now stays
    within the footage's reach, with a warning; a calibration whose threshold no frame can reach is never written."""
    import dataclasses

    from m2s2l_edge.config import get_score
    from m2s2l_edge.watch.calibration import fit, highest_score, save

    rng = np.random.default_rng(222)
    fused = 30 + rng.normal(0, 0.05, 200)
    hits = rng.choice(200, rng.integers(3, 12), replace=False)
    fused[hits] -= rng.choice([0.5, 3.0], hits.size) * rng.uniform(0.8, 1.2, hits.size)
    terms = {"psnr_app": fused, "psnr_mot": fused, "patch_app": fused, "patch_mot": fused,
             "change": np.full(200, 0.01)}
    cal = fit(terms, get_score("paper"), fps=25.0)
    assert "8 s of footage is too short" in cal.warning and cal.threshold < highest_score(cal)
    save(cal, tmp_path / "short.calib.json")
    unreachable = dataclasses.replace(cal, threshold=1e17)
    with pytest.raises(ValueError, match="can never be reached"):
        save(unreachable, tmp_path / "never.calib.json")
    assert not (tmp_path / "never.calib.json").exists()


def test_serve_triton_repo_validates_the_calibration_and_checks_its_model(tmp_path, exports):
    from m2s2l_edge.artifacts.metadata import read_metadata
    from m2s2l_edge.watch.calibration import ModelIdentity

    onnx = exports["portable"]
    meta = read_metadata(onnx).to_dict()
    size = meta["image_size"]

    def identity(weights: str) -> dict:
        return {"weights_sha256": weights, "preset": meta["preset"], "image_size": [size, size],
                "clip_len": meta["clip_len"], "lam": 1.0, "score": "stream", "precision": "float", "file": onnx.name,
                "file_sha256": ""}

    assert ModelIdentity(**{**identity("x"), "image_size": (size, size)})  # the fields a calibration records
    cases = [
        (_calibration(**{"stats.scale": "0.5", "model": identity(meta["weights_sha256"])}),
         "stats.scale must be a finite number > 0"),
        (_calibration(model=identity("ab" * 32)), "does not fit this model"),
        (_calibration(), "records no model"),
    ]
    for i, (data, expected) in enumerate(cases):
        cal = tmp_path / f"c{i}.calib.json"
        cal.write_text(json.dumps(data))
        r = CliRunner().invoke(app, ["serve", "triton-repo", "--onnx", str(onnx), "--out", str(tmp_path / f"r{i}"),
                                     "--calibration", str(cal)])
        assert r.exit_code == 1, r.output
        assert expected in one_error_line(r.output)
        assert not (tmp_path / f"r{i}").exists()
    good = tmp_path / "good.calib.json"
    good.write_text(json.dumps(_calibration(model=identity(meta["weights_sha256"]))))
    r = CliRunner().invoke(app, ["serve", "triton-repo", "--onnx", str(onnx), "--out", str(tmp_path / "ok"),
                                 "--calibration", str(good)])
    assert r.exit_code == 0, r.output
