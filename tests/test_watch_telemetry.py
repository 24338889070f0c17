"""Telemetry: rates, drops, latency percentiles over a bounded reservoir, backend numbers, and a Prometheus
endpoint scraped over HTTP."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from m2s2l_edge.watch.telemetry import Telemetry


class Clock:
    """A settable clock, so rates are exact whatever the machine's load."""

    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def fill(tel, clock, camera="cam0", frames=100, fps=10.0):
    """``frames`` frames at ``fps``, each decided (i + 1) ms after its capture (1 .. frames ms)."""
    for i in range(frames):
        clock.t = 1000.0 + i / fps
        tel.captured(camera)
        tel.processed(camera, capture_time=clock.t, now=clock.t + (i + 1) / 1000)


def test_summary_rates_latency_percentiles_and_backend():
    clock = Clock()
    tel = Telemetry(clock=clock, rate_window_s=5.0)
    tel.set_online("cam0", True)
    fill(tel, clock)
    tel.dropped("cam0", 7)
    for n in (1, 2, 2, 4):
        tel.backend_call(0.010 * n, n)
    tel.backend_call(0.5, 3, ok=False)
    tel.event({"state": "start", "camera": "cam0", "kind": "anomaly"})
    tel.event({"state": "end", "camera": "cam0", "kind": "anomaly"})
    tel.event({"state": "start", "camera": "cam0", "kind": "frozen"})
    s = tel.summary()
    cam = s["cameras"]["cam0"]
    assert (cam["captured"], cam["processed"], cam["dropped"], cam["online"]) == (100, 100, 7, True)
    # Decisions at 1000 + i/10 + (i+1)/1000 s: 99 intervals over 9.999 s.
    assert cam["capture_fps"] == pytest.approx(10.0) and cam["processed_fps"] == pytest.approx(99 / 9.999, abs=1e-3)
    assert cam["capture_fps_now"] == pytest.approx(10.0, rel=0.05), "the last 5 s hold 50 frames"
    # Latencies 1, 2, ..., 100 ms: linear-interpolated percentiles.
    assert cam["latency_ms"] == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01})
    assert cam["events"] == {"anomaly": 1, "frozen": 1}, "counted at their start only"
    b = s["backend"]
    assert (b["calls"], b["errors"], b["clips"], b["mean_batch"]) == (4, 1, 9, 2.25)
    assert b["batch_sizes"] == {"1": 1, "2": 2, "4": 1}
    assert b["mean_ms"] == pytest.approx(22.5)
    assert b["time_ms"]["p50"] == pytest.approx(20.0)


def test_memory_is_bounded_and_percentiles_follow_the_recent_frames():
    clock = Clock()
    tel = Telemetry(reservoir=100, rate_window_s=2.0, clock=clock)
    fill(tel, clock, frames=5000, fps=50.0)
    cam = tel.summary()["cameras"]["cam0"]
    assert cam["processed"] == 5000 and cam["latency_samples"] == 100
    assert cam["latency_ms"]["p50"] == pytest.approx(4950.5), "the last 100 latencies: 4901 .. 5000 ms"
    rates = tel._cams["cam0"].captured
    assert len(rates.times) <= 2.0 * 50 + 1, "the rate keeps only its window"
    # A camera that stops delivering decays to 0 fps once its window has passed.
    clock.t += 3.0
    assert tel.summary()["cameras"]["cam0"]["capture_fps_now"] == 0.0


def test_reconnects_are_counted():
    clock = Clock()
    tel = Telemetry(clock=clock)
    tel.set_online("cam0", True)
    tel.captured("cam0")
    tel.set_online("cam0", False)
    tel.set_online("cam0", True)
    tel.set_online("cam0", True)
    assert tel.summary()["cameras"]["cam0"]["reconnects"] == 1


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_prometheus_endpoint_serves_our_own_registry():
    pytest.importorskip(
        "prometheus_client", reason="prometheus-client is not installed (pip install 'm2s2l-edge[watch]')"
    )
    import prometheus_client

    clock = Clock()
    tel = Telemetry(clock=clock)
    other = Telemetry(clock=clock)
    tel.set_online("cam0", True)
    fill(tel, clock, frames=40)
    tel.captured("cam1")
    tel.dropped("cam1", 3)
    tel.backend_call(0.02, 2)
    tel.event({"state": "start", "camera": "cam0", "kind": "black"})
    port = tel.serve(0)
    try:
        # A second process-wide collector would clash in the global registry; ours are separate.
        assert other.serve(0) != port
        m = scrape(port)
        assert m[("m2s2l_frames_captured_total", (("camera", "cam0"),))] == 40
        assert m[("m2s2l_frames_processed_total", (("camera", "cam0"),))] == 40
        assert m[("m2s2l_frames_dropped_total", (("camera", "cam1"),))] == 3
        assert m[("m2s2l_camera_online", (("camera", "cam0"),))] == 1.0
        assert m[("m2s2l_camera_online", (("camera", "cam1"),))] == 0.0
        assert m[("m2s2l_decision_latency_seconds", (("camera", "cam0"), ("quantile", "0.5")))] == pytest.approx(0.0205)
        assert m[("m2s2l_events_total", (("camera", "cam0"), ("kind", "black")))] == 1
        assert m[("m2s2l_backend_calls_total", ())] == 1
        assert m[("m2s2l_backend_batch_size", ())] == 2.0
        # Counters grow between scrapes: values are read at scrape time.
        tel.captured("cam0", 5)
        assert scrape(port)[("m2s2l_frames_captured_total", (("camera", "cam0"),))] == 45
        assert "m2s2l_frames_captured" not in prometheus_client.REGISTRY._names_to_collectors
        assert "m2s2l_frames_captured_total" not in prometheus_client.REGISTRY._names_to_collectors
        with pytest.raises(ValueError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            Telemetry().serve(port)
    finally:
        tel.close()
        other.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)


def test_bad_metrics_port():
    for bad in (-1, 70000, "9100"):
        with pytest.raises(ValueError, match="metrics port must be an integer in 0..65535"):
            Telemetry().serve(bad)


def test_metrics_listen_on_loopback_only():
    pytest.importorskip(
        "prometheus_client", reason="prometheus-client is not installed (pip install 'm2s2l-edge[watch]')"
    )
    tel = Telemetry()
    port = tel.serve(0)
    try:
        host = socket.gethostbyname(socket.gethostname())
        if host.startswith("127."):
            pytest.skip("this machine has no non-loopback address to try")
        with pytest.raises(OSError):
            socket.create_connection((host, port), timeout=2).close()
    finally:
        tel.close()
