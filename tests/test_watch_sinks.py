"""Sinks against real receivers: a JSON-lines file read while open, local HTTP servers (fast, flaky, slow, silent)
and a real mosquitto broker with a paho subscriber."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from m2s2l_edge.watch.sinks import JsonlSink, MqttSink, SinkSet, WebhookSink, camera_topic, parse_mqtt_url

ROOT = Path(__file__).resolve().parents[1]


def event(i=0, state="start", camera="cam0", **extra):
    return {
        "type": "event",
        "id": f"{camera}-anomaly-x-{i}",
        "camera": camera,
        "kind": "anomaly",
        "state": state,
        "seq": i,
        **extra,
    }


def wait_for(cond, timeout=20.0, step=0.02):
    """Poll ``cond`` until true (generous bound: the CI machine is slow and shared)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


# ---------------------------------------------------------------------------------------------------- JSON lines


def test_jsonl_lines_are_on_disk_while_the_sink_is_open(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"earlier": true}\n')
    sink = JsonlSink(path)
    sink.emit(event(0, score=float("nan")))
    lines = path.read_text().splitlines()
    assert len(lines) == 2, "appended, and flushed before emit() returned"
    assert json.loads(lines[1])["score"] is None, "NaN is written as null (valid JSON)"
    sink.status("cam0", False, {"reason": "read timeout", "wall_time": 1_796_000_000.0})
    status = json.loads(path.read_text().splitlines()[2])
    assert status == {
        "type": "status",
        "schema": 1,
        "camera": "cam0",
        "online": False,
        "time": "2026-11-30T00:53:20.000Z",
        "reason": "read timeout",
    }
    sink.emit(event(1, state="end"))
    assert [json.loads(x).get("state") for x in path.read_text().splitlines()] == [None, "start", None, "end"]
    sink.close()
    assert sink.lines == 3


def test_jsonl_to_stdout(capsys):
    sink = JsonlSink("-")
    sink.emit(event(0))
    sink.close()
    assert json.loads(capsys.readouterr().out)["id"] == "cam0-anomaly-x-0"


def test_jsonl_unwritable_targets_are_one_line_value_errors(tmp_path):
    with pytest.raises(ValueError, match=r"cannot write events to .*missing/e.jsonl: No such file or directory"):
        JsonlSink(tmp_path / "missing" / "e.jsonl")
    with pytest.raises(ValueError, match="it is a folder"):
        JsonlSink(tmp_path)


def test_jsonl_write_errors_are_counted_and_reported_once(tmp_path, caplog):
    full = JsonlSink("/dev/full")  # a real write error: ENOSPC on every write
    sinks = SinkSet([full])
    with caplog.at_level("ERROR", logger="m2s2l_edge.watch.sinks"):
        for i in range(3):
            sinks.emit(event(i))
        sinks.status("cam0", True, {})
    sinks.close()
    assert full.stats.failed == 4 and full.stats.lines == 0
    assert "No space left on device" in full.stats.last_error
    assert len([r for r in caplog.records if "could not be written" in r.getMessage()]) == 1
    assert sinks.summary()["JsonlSink"]["failed"] == 4 and sinks.errors == {}


class _Broken:
    """A sink whose every call raises (a third-party sink with a bug)."""

    def emit(self, msg):
        raise RuntimeError("boom")

    def status(self, camera, online, info):
        raise RuntimeError("boom")

    def close(self):
        raise RuntimeError("boom")


def test_sinkset_isolates_a_failing_sink(tmp_path):
    good = JsonlSink(tmp_path / "e.jsonl")
    sinks = SinkSet([_Broken(), good])
    for i in range(3):
        sinks.emit(event(i))
    sinks.status("cam0", True, {})
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) == 4
    assert sinks.errors == {"_Broken": 4}
    sinks.close()
    assert sinks.summary()["errors"]["_Broken"] == 5


# ---------------------------------------------------------------------------------------------------- webhook


class Receiver:
    """A local HTTP server; ``behaviour(n)`` → (status, delay_s) for the n-th request (0-based)."""

    def __init__(self, behaviour=lambda n: (200, 0.0)):
        self.bodies: list[dict] = []
        self.requests = 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                with outer.lock:
                    n = outer.requests
                    outer.requests += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, delay = behaviour(n)
                # Bounded: a "never answering" receiver is released when the test ends.
                outer.release.wait(delay)
                if status == 200:
                    outer.bodies.append(json.loads(body))
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (timeout) and closed the socket

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(behaviour=lambda n: (200, 0.0)):
        r = Receiver(behaviour)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def test_webhook_delivers_every_message_in_order(receiver):
    r = receiver()
    sink = WebhookSink(r.url, timeout=10)
    for i in range(5):
        sink.emit(event(i))
    sink.status("cam0", True, {"reason": "opened"})
    sink.close()
    assert [b.get("seq") for b in r.bodies] == [0, 1, 2, 3, 4, None]
    assert r.bodies[-1]["type"] == "status" and r.bodies[-1]["online"] is True
    assert (sink.stats.sent, sink.stats.failed, sink.stats.dropped) == (6, 0, 0)


def test_webhook_retries_server_errors_with_backoff_and_not_client_errors(receiver):
    flaky = receiver(lambda n: (503, 0.0) if n < 2 else (200, 0.0))
    sink = WebhookSink(flaky.url, timeout=10, retries=3, backoff=0.05)
    sink.emit(event(7))
    sink.close()
    assert flaky.requests == 3 and [b["seq"] for b in flaky.bodies] == [7]
    assert (sink.stats.sent, sink.stats.retries, sink.stats.failed) == (1, 2, 0)

    refusing = receiver(lambda n: (400, 0.0))
    sink = WebhookSink(refusing.url, timeout=10, retries=3, backoff=0.05)
    sink.emit(event(8))
    sink.close()
    assert refusing.requests == 1, "a 400 is the receiver refusing this message: retrying would not help"
    assert sink.stats.failed == 1


def test_webhook_to_a_slow_receiver_never_blocks_the_caller(receiver):
    slow = receiver(lambda n: (200, 60.0))  # holds every answer until the test lets it go (at most 60 s)
    sink = WebhookSink(slow.url, timeout=60, retries=0)
    t0 = time.monotonic()
    for i in range(3):
        sink.emit(event(i))
    enqueue_s = time.monotonic() - t0
    assert wait_for(lambda: slow.requests == 1), "the first POST is waiting for its answer"
    # emit() only enqueued: it returned while the receiver still held the first answer (a blocking sink would
    # still be inside the first call, for up to 60 s).
    assert enqueue_s < 5.0 and not slow.bodies
    slow.release.set()
    sink.close()
    assert [b["seq"] for b in slow.bodies] == [0, 1, 2]
    assert sink.stats.sent == 3


def test_webhook_to_a_silent_receiver_times_out_retries_and_counts(receiver):
    silent = receiver(lambda n: (200, 60.0))  # reads the request, never answers (until the test ends)
    sink = WebhookSink(silent.url, timeout=0.3, retries=2, backoff=0.05, queue_size=2, close_timeout=30)
    sink.emit(event(0))
    assert wait_for(lambda: silent.requests >= 1), "the worker is now waiting on the first message"
    t0 = time.monotonic()
    for i in range(1, 6):
        sink.emit(event(i))
    assert time.monotonic() - t0 < 1.0, "emit() never waits for the network"
    assert wait_for(lambda: sink.stats.failed >= 1)
    sink.close()
    # The worker holds the first message, two more fit the queue: the other three were dropped at emit().
    assert sink.stats.dropped == 3 and sink.stats.failed == 3 and sink.stats.sent == 0
    assert silent.requests == 9, "each of the 3 messages tried 1 + 2 times"
    assert sink.stats.retries == 6


def test_webhook_close_gives_up_on_a_wedged_receiver_in_bounded_time(receiver):
    silent = receiver(lambda n: (200, 60.0))
    sink = WebhookSink(silent.url, timeout=2.0, retries=5, backoff=1.0, close_timeout=0.5)
    for i in range(4):
        sink.emit(event(i))
    t0 = time.monotonic()
    sink.close()
    # close_timeout 0.5 s, then at most one in-flight attempt (timeout 2 s) to finish: far less than 4 × 6 × 2 s.
    assert time.monotonic() - t0 < 15
    assert sink.stats.dropped >= 2 and sink.stats.sent == 0


def test_webhook_bad_urls():
    for url in ("ftp://x/y", "http:///nohost", "localhost:8080/hook", "http://h:port/x"):
        with pytest.raises(ValueError, match="webhook URL"):
            WebhookSink(url)
    with pytest.raises(ValueError, match="retries must be an integer >= 0"):
        WebhookSink("http://127.0.0.1:9/x", retries=-1)


# ---------------------------------------------------------------------------------------------------- MQTT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A real mosquitto on a free 127.0.0.1 port, which a test may stop and start again on the same port."""

    def __init__(self, exe: str, folder: Path):
        self.exe = exe
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def accepting(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if not wait_for(lambda: self.accepting() or self.proc.poll() is not None) or self.proc.poll() is not None:
            self.stop()
            pytest.fail(f"mosquitto did not start: {self.proc.stderr.read().decode(errors='replace')[-500:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def mosquitto(tmp_path):
    """A started :class:`Broker` (Debian package ``mosquitto``); stopped when the test ends."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        pytest.skip("mosquitto is not installed (Debian package `mosquitto`: apt-get install -y mosquitto)")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'm2s2l-edge[watch]')")
    b = Broker(exe, tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def broker(mosquitto):
    return mosquitto.port


class Subscriber:
    """A paho client collecting (topic, payload, retain) for a topic filter."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as mqtt

        self.got: list[tuple[str, dict | str, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{id(self)}")
        c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe(topic, qos=1), None)
        c.on_subscribe = lambda cl, u, mid, rcs, p: self.ready.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        assert self.ready.wait(20), "subscriber did not subscribe"

    def _on_message(self, client, userdata, m):
        try:
            payload = json.loads(m.payload)
        except ValueError:
            payload = m.payload.decode()
        with self.lock:
            self.got.append((m.topic, payload, bool(m.retain)))

    def on(self, topic):
        with self.lock:
            return [(p, r) for t, p, r in self.got if t == topic]

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_events_status_and_clean_shutdown(broker):
    live = Subscriber(broker, "site/#")
    sink = MqttSink(f"mqtt://127.0.0.1:{broker}/site", client_id="watch-test")
    sink.status("gate/1", True, {"reason": "opened"})
    sink.emit(event(0, camera="gate/1", score=4.2))
    sink.emit(event(1, camera="gate/1", state="end"))
    assert wait_for(lambda: len(live.on("site/gate_1/events")) == 2)
    events = [p for p, _ in live.on("site/gate_1/events")]
    assert [e["state"] for e in events] == ["start", "end"] and events[0]["camera"] == "gate/1"
    assert wait_for(lambda: live.on("site/status"))
    assert live.on("site/status")[-1][0]["online"] is True

    # A subscriber arriving later still learns each camera's state: the status is retained.
    late = Subscriber(broker, "site/+/status")
    assert wait_for(lambda: late.on("site/gate_1/status"))
    status, retained = late.on("site/gate_1/status")[0]
    assert retained and status["online"] is True and status["camera"] == "gate/1"
    late.stop()

    sink.close()
    assert wait_for(lambda: any(p["online"] is False for p, _ in live.on("site/status")))
    assert wait_for(lambda: any(p["online"] is False for p, _ in live.on("site/gate_1/status")))
    assert live.on("site/status")[-1][0]["reason"] == "shutdown"
    live.stop()
    assert sink.stats.published == 4 and sink.stats.dropped == 0  # status, 2 events, offline status


def test_mqtt_last_will_marks_a_dead_process_offline(broker):
    sub = Subscriber(broker, "m2s2l/status")
    code = (
        "import sys, time\n"
        "from m2s2l_edge.watch.sinks import MqttSink\n"
        f"s = MqttSink('mqtt://127.0.0.1:{broker}', client_id='doomed')\n"
        "s.status('cam0', True, {})\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        assert wait_for(lambda: any(p["online"] for p, _ in sub.on("m2s2l/status")))
        proc.kill()  # no clean shutdown: only the broker's last will can tell
        proc.wait(10)
        assert wait_for(lambda: sub.on("m2s2l/status") and sub.on("m2s2l/status")[-1][0]["online"] is False)
        last = sub.on("m2s2l/status")[-1][0]
        assert last == {"online": False, "client": "doomed", "reason": "connection lost"}
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.stop()


def test_mqtt_unreachable_broker_and_bad_urls():
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'm2s2l-edge[watch]')")
    port = free_port()  # nothing listens there
    with pytest.raises(ValueError, match=rf"cannot reach MQTT broker 127.0.0.1:{port}"):
        MqttSink(f"mqtt://127.0.0.1:{port}/x", connect_timeout=5)
    for url in ("http://127.0.0.1/x", "mqtt:///x", "mqtt://h:99999/x", "mqtt://h/a/#"):
        with pytest.raises(ValueError, match="MQTT"):
            parse_mqtt_url(url)
    t = parse_mqtt_url("mqtts://user:p%40ss@broker.local/plant/a")
    assert (t.host, t.port, t.prefix, t.tls, t.username, t.password) == (
        "broker.local",
        8883,
        "plant/a",
        True,
        "user",
        "p@ss",
    )
    assert parse_mqtt_url("mqtt://h").prefix == "m2s2l" and parse_mqtt_url("mqtt://h").port == 1883
    assert camera_topic("a/b+c#") == "a_b_c_"


def test_mqtt_sink_survives_a_broker_restart(mosquitto):
    sink = MqttSink(f"mqtt://127.0.0.1:{mosquitto.port}/site", client_id="survivor")
    sink.status("cam0", True, {})
    mosquitto.stop()
    # Published while the broker is down: paho keeps QoS 1 messages and sends them once it has reconnected.
    sink.status("cam0", False, {"reason": "read timeout"})
    mosquitto.start()
    sub = Subscriber(mosquitto.port, "site/#")
    try:
        # The broker kept nothing (persistence off): the retained status it holds now came after the restart.
        assert wait_for(lambda: any(p.get("reason") == "read timeout" for p, _ in sub.on("site/cam0/status")), 30)
        assert wait_for(lambda: sub.on("site/status") and sub.on("site/status")[-1][0]["online"] is True, 30)
    finally:
        sub.stop()
        sink.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_score_table_on_a_full_disk_reports_once_and_never_stops_the_watch(caplog):
    """--scores is for reading the scores: a write the disk refuses ends the table with one warning, not the watch."""
    import numpy as np

    from m2s2l_edge.watch.sinks import ScoreTable
    from m2s2l_edge.watch.types import FrameScore

    terms = {"psnr_app": 30.0, "psnr_mot": 29.0, "patch_app": 20.0, "patch_mot": 19.0, "change": 0.01}
    table = ScoreTable("/dev/full")
    for i in range(3000):  # past the text buffer: the kernel refuses the flush (ENOSPC)
        fs = FrameScore("cam0", i, i / 10, 0.0, 0.0, 30.0, 29.0, 20.0, 0.5, 3.0, np.zeros((2, 2), np.float32),
                        np.zeros((2, 2, 3), np.uint8), terms)
        table.write(fs, 0.4, 3.0, False)
    table.close()
    summary = table.summary()
    assert summary["error"] and summary["rows"] < 3000
    assert sum("--scores /dev/full" in r.getMessage() for r in caplog.records) == 1
