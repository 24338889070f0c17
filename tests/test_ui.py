"""The web view of `watch --ui` and the HTML reports, driven by a real headless browser (Debian's chromium through
chromium-driver; tests/browser.py) against a real watch on generated footage with injected anomalies; the server's
gate checked from a real non-loopback address (a network namespace with a veth pair) where the machine allows one.
Screenshots go to test-artifacts/ (the run's summary names them)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from m2s2l_edge.cli.app import app

browser = pytest.importorskip("browser")  # tests/browser.py
web = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("starlette", "uvicorn", "ruamel")),
    reason="needs the [ui] extra (pip install 'm2s2l-edge[ui]')")
needs_browser = pytest.mark.skipif(browser.missing() is not None, reason=browser.missing() or "")

FPS = 25.0
STALLS = (40, 160, 280)  # frozen stretches of STALL frames: the camera repeats frame s - 1 on frames s .. s+STALL-1
STALL = 30
FRAMES = 560  # long enough for the browser to draw and save regions after the third stall
TOKEN = "a-test-token-of-32-characters-xx"


def _write_avi(path: Path, frames: np.ndarray, fps: float = FPS) -> Path:
    import cv2

    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """A generated plaza stream of 340 frames (25 fps, 128 px) whose camera stalls three times, normal footage of the
    same scene, its calibration (the real `calibrate`) and a cameras.yaml with a comment that saving must keep."""
    from m2s2l_edge.data.synthetic import AnomalyEvent, render_video

    root = tmp_path_factory.mktemp("ui")
    stream = render_video(size=128, frames=FRAMES, seed=0, index=0, split="test",
                          events=tuple(AnomalyEvent("frozen", s, STALL) for s in STALLS))
    normal = render_video(size=128, frames=240, seed=0, index=0, split="train")
    live = _write_avi(root / "plaza.avi", stream.frames)
    _write_avi(root / "normal.avi", normal.frames)
    r = CliRunner().invoke(app, ["calibrate", "--preset", "tiny", "--source", str(root / "normal.avi"), "--out",
                                 str(root / "plaza.calib.json")])
    assert r.exit_code == 0, r.output
    config = root / "cameras.yaml"
    config.write_text("# the plaza camera (a comment the web view must keep when it saves)\n"
                      "cameras:\n"
                      "  plaza:\n"
                      f"    source: {live.name}\n"
                      "    calibration: plaza.calib.json\n"
                      "    events: {min_duration_s: 0.3, cooldown_s: 1.0}\n"
                      "    faults: {frozen_s: 0.8}\n", encoding="utf-8")
    return {"root": root, "live": live, "config": config, "calibration": root / "plaza.calib.json"}


class WatchProcess:
    """`m2s2l-edge watch ... --ui 0` as a real process; ``url`` once it printed where its web view listens."""

    def __init__(self, args: list[str], env: dict | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "m2s2l_edge", "watch", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                m = re.match(r"web view: (http://\S+/)", line)
                if m:
                    return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("watch printed no web view address:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(timeout=5)
        return code


def _pixels(driver, selector: str, rgb: tuple[int, int, int], tol: int = 40) -> int:
    """Pixels of the canvases under ``selector`` within ``tol`` of colour ``rgb`` (what a chart drew)."""
    return driver.execute_script("""
        const [sel, rgb, tol] = arguments; let n = 0;
        for (const c of document.querySelectorAll(sel)) {
          const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          for (let i = 0; i < d.length; i += 4)
            if (Math.abs(d[i] - rgb[0]) < tol && Math.abs(d[i+1] - rgb[1]) < tol && Math.abs(d[i+2] - rgb[2]) < tol
                && d[i+3] > 128) n++;
        }
        return n;""", selector, list(rgb), tol)


def _frame(driver) -> int:
    return int(driver.execute_script("return +document.querySelector('#tile-plaza').dataset.frame || -1"))


def _anomaly_starts(driver) -> list[int]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#events li.event.anomaly')].map(e => +e.dataset.firstFrame)")


@web
@needs_browser
@pytest.mark.slow
def test_live_view_shows_cameras_events_and_takes_threshold_and_regions(footage, tmp_path):
    """One real watch (the stream paced at its 25 fps, as a camera delivers it) and a headless browser on its web
    view: the tile's picture changes, the timeline draws, events appear with their snapshots and clips beside the
    camera's frozen faults, a threshold set in the page decides what is raised next, and regions drawn and saved give
    a file that `watch --config` accepts."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from m2s2l_edge.watch.cameras import load_cameras

    config = tmp_path / "cameras.yaml"
    # This watch also writes each event's clip (half a second either side), for the events view's clip link.
    text = footage["config"].read_text()
    assert "cooldown_s: 1.0}" in text
    config.write_text(text.replace("cooldown_s: 1.0}", "cooldown_s: 1.0, clip: true, pre_roll_s: 0.5, "
                                                       "post_roll_s: 0.5}"))
    for name in ("plaza.avi", "plaza.calib.json"):
        (tmp_path / name).symlink_to(footage["root"] / name)
    events = tmp_path / "events.jsonl"
    watch = WatchProcess(["--preset", "tiny", "--config", str(config), "--ui", "0", "--snapshots",
                          str(tmp_path / "snaps"), "--events", str(events), "--threads", "1"])
    try:
        url = watch.url()
        with browser.chromium() as d:
            d.get(url)
            wait = browser.wait_until
            # The camera's picture arrives and changes (a new frame, a new picture).
            first = wait(d, "const i = document.querySelector('#tile-plaza img.live');"
                            "return i && i.naturalWidth > 0 && i.dataset.seq", 30, "the first live picture")
            wait(d, "const i = document.querySelector('#tile-plaza img.live');"
                    "return i.naturalWidth > 0 && i.dataset.seq !== arguments[0] && i.dataset.seq", 15,
                 "a newer live picture", first)
            # The score timeline is drawn: the score in blue, the threshold in red.
            wait(d, "return document.querySelector('#tile-plaza .timeline canvas')", 10, "the timeline")
            deadline = time.monotonic() + 10
            while _pixels(d, "#tile-plaza .timeline canvas", (0x2f, 0x6f, 0xd0)) < 50 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _pixels(d, "#tile-plaza .timeline canvas", (0x2f, 0x6f, 0xd0)) >= 50
            assert _pixels(d, "#tile-plaza .timeline canvas", (0xd6, 0x27, 0x28)) >= 20
            # The first stall: an anomaly (the stream score flags a repeated frame) with its snapshot, and beside it
            # the camera's frozen fault.
            wait(d, "const e = document.querySelector('#events li.event.anomaly img.thumb');"
                    "return e && e.complete && e.naturalWidth > 0", 30, "an anomaly with its snapshot")
            wait(d, "return document.querySelector('#events li.event.fault')", 15, "the frozen fault")
            wait(d, "return document.querySelector('#events li.event.anomaly.ended')", 15, "the first event's end")
            # Its clip, served from the --snapshots folder: the MP4 the watch wrote.
            href = wait(d, "const a = document.querySelector('#events li.event.anomaly.ended a.clip');"
                           "return a && a.href", 10, "the first event's clip link")
            got = d.execute_async_script("""const [href, done] = arguments;
                fetch(href).then(async r => done([r.status, r.headers.get('content-type'),
                    (await r.arrayBuffer()).byteLength])).catch(e => done(String(e)));""", href)
            assert got[0] == 200 and got[1] == "video/mp4" and got[2] > 1000, got
            browser.screenshot(d, "ui-live-view")
            assert _anomaly_starts(d) and all(STALLS[0] - 2 <= f < STALLS[0] + STALL for f in _anomaly_starts(d))
            thr0 = float(d.find_element(By.CSS_SELECTOR, "#tile-plaza .thr").text)

            # A threshold no score reaches: the second stall raises nothing (its fault still shows).
            box = d.find_element(By.CSS_SELECTOR, "#tile-plaza input.threshold")
            box.clear()
            box.send_keys("1000000")
            d.find_element(By.CSS_SELECTOR, "#tile-plaza .apply-threshold").click()
            wait(d, "return document.querySelector('#tile-plaza .thr').textContent === '1000000.00'", 10,
                 "the new threshold in force")
            applied = _frame(d)
            assert applied < STALLS[1], (f"the threshold took effect at frame {applied}, after the second stall "
                                         f"began; console: {d.get_log('browser')}")
            wait(d, f"return +document.querySelector('#tile-plaza').dataset.frame > {STALLS[1] + STALL + 10}", 30,
                 "the second stall to pass")
            assert len(_anomaly_starts(d)) == 1, _anomaly_starts(d)
            wait(d, "return document.querySelectorAll('#events li.event.fault').length >= 2", 10, "the second fault")

            # Back to the calibration's threshold: the third stall is raised again.
            d.find_element(By.CSS_SELECTOR, "#tile-plaza .reset-threshold").click()
            wait(d, f"return document.querySelector('#tile-plaza .thr').textContent === '{thr0:.2f}'", 10,
                 "the calibration's threshold back")
            assert _frame(d) < STALLS[2]
            wait(d, "return document.querySelectorAll('#events li.event.anomaly').length >= 2", 30,
                 "an anomaly on the third stall")
            assert STALLS[2] - 2 <= max(_anomaly_starts(d)) < STALLS[2] + STALL

            # Regions: draw a quadrilateral on the frame and save it to the file.
            d.find_element(By.CSS_SELECTOR, "#tile-plaza .edit-rois").click()
            wait(d, "const i = document.querySelector('#roi-editor img.still');"
                    "return !document.querySelector('#roi-editor').hidden && i.complete && i.naturalWidth > 0", 10,
                 "the region editor's picture")
            d.find_element(By.CSS_SELECTOR, "#roi-editor .new-roi").click()
            svg = d.find_element(By.CSS_SELECTOR, "#roi-editor svg.editor")
            corners = [(0.1, 0.2), (0.7, 0.2), (0.8, 0.9), (0.15, 0.85), (0.1, 0.2)]  # back to the first: closed
            for fx, fy in corners:
                # Frame pixels → the page's pixels (the picture is letterboxed in the editor), as offsets from the
                # element's centre (Selenium 4's origin).
                dx, dy = d.execute_script("""
                    const [svg, x, y] = arguments, pt = svg.createSVGPoint(), r = svg.getBoundingClientRect();
                    pt.x = x; pt.y = y; const p = pt.matrixTransform(svg.getScreenCTM());
                    return [p.x - (r.left + r.width / 2), p.y - (r.top + r.height / 2)];""", svg, fx * 128, fy * 128)
                ActionChains(d).move_to_element_with_offset(svg, round(dx), round(dy)).click().perform()
            assert d.execute_script("return document.querySelectorAll('#roi-editor svg .roi').length") == 1
            browser.screenshot(d, "ui-region-editor")
            d.find_element(By.CSS_SELECTOR, "#roi-editor .save-rois").click()
            said = wait(d, "const m = document.querySelector('#roi-editor .msg');"
                           "return (/saved to/.test(m.textContent) || m.classList.contains('bad')) && m.textContent",
                        10, "the save")
            assert "saved to" in said, said
            saved = load_cameras(config)  # watch --config's parser and checks
            (roi,) = saved[0].roi
            assert len(roi) == 4 and all(0 <= x <= 128 and 0 <= y <= 128 for x, y in roi)
            assert roi[0][0] == pytest.approx(0.1 * 128, abs=3) and roi[2][1] == pytest.approx(0.9 * 128, abs=3)
            assert config.read_text().startswith("# the plaza camera")  # comments kept
            d.find_element(By.CSS_SELECTOR, "#roi-editor .close").click()
            wait(d, "return document.querySelectorAll('#tile-plaza svg.rois-overlay polygon').length === 1", 10,
                 "the region on the tile")

            # The threshold box's Save writes the camera's threshold.
            box = d.find_element(By.CSS_SELECTOR, "#tile-plaza input.threshold")
            box.clear()
            box.send_keys("2.5")
            d.find_element(By.CSS_SELECTOR, "#tile-plaza .save-threshold").click()
            wait(d, "return /saved to/.test(document.querySelector('#tile-plaza .msg').textContent)", 10,
                 "the threshold saved")
            assert load_cameras(config)[0].threshold == 2.5
            browser.screenshot(d, "ui-after-save")
    finally:
        code = watch.stop()
    assert code == 0, "\n".join(watch.lines)
    # The events file agrees with the page: no anomaly started while the threshold was out of reach.
    starts = [json.loads(line) for line in events.read_text().splitlines()]
    starts = [m["first"]["frame"] for m in starts if m.get("kind") == "anomaly" and m.get("state") == "start"]
    assert not [f for f in starts if STALLS[1] - 2 <= f < STALLS[1] + STALL], starts
    # The saved file is one `watch --config` runs.
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--config", str(config), "--replay", "--json",
                                 str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    cam = json.loads((tmp_path / "s.json").read_text())["cameras"]["plaza"]
    assert cam["threshold"] == 2.5 and cam["threshold_source"] == "camera plaza's threshold in --config"


# --- the gate: loopback by default, a token for anything else --------------------------------------------------


def _request(url: str, *, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    """(status, headers, body) of one request, following no redirect."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def view(tmp_path):
    """A web view of a feed with one camera, no watch behind it (the gate and the files need none): yields
    (start(address, token) → base URL, the snapshot folder)."""
    from m2s2l_edge.ui.bind import parse_address
    from m2s2l_edge.ui.server import UIServer
    from m2s2l_edge.watch.live import LiveFeed

    snaps = tmp_path / "snaps"
    snaps.mkdir()
    servers = []

    def start(address: str = "0", token: str | None = None) -> str:
        server = UIServer(LiveFeed(["cam0"]), parse_address(address), token=token, media_dir=snaps)
        server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start, snaps
    for s in servers:
        s.stop()


@web
def test_loopback_view_refuses_foreign_hosts_sites_and_paths(view):
    start, snaps = view
    base = start()
    assert _request(base + "/")[0] == 200 and _request(base + "/api/state")[0] == 200
    # DNS rebinding: a page of another site that resolves to 127.0.0.1 sends its own Host.
    assert _request(base + "/api/state", headers={"Host": "attacker.example"})[0] == 403
    # A control from another site (through the operator's browser), or not JSON: refused before any handler.
    status, _, body = _request(base + "/api/cameras/cam0/threshold", method="POST", body=b'{"threshold": 3}',
                               headers={"Content-Type": "application/json", "Origin": "http://attacker.example"})
    assert status == 403 and b"another site" in body
    assert _request(base + "/api/cameras/cam0/threshold", method="POST", body=b"threshold=3",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    # Snapshots: a file of the folder is served; nothing outside it, however the name is spelt.
    (snaps / "cam0-anomaly-1.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    outside = snaps.parent / "secret.jpg"
    outside.write_bytes(b"secret")
    (snaps / "link.jpg").symlink_to(outside)
    assert _request(base + "/media/cam0-anomaly-1.jpg")[0] == 200
    for name in ("link.jpg", "..%2Fsecret.jpg", "%2E%2E%2Fsecret.jpg", "secret.jpg", "..", "cam0.txt"):
        status, _, body = _request(base + "/media/" + name)
        assert status == 404 and b"secret" not in body, name


def test_bind_rules_need_a_token_beyond_loopback(monkeypatch):
    from m2s2l_edge.ui.bind import TOKEN_ENV, parse_address, resolve_token

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert parse_address("8080") == parse_address("127.0.0.1:8080") and parse_address("8080").loopback
    assert parse_address("[::1]:9000").host == "::1" and parse_address("[::1]:9000").loopback
    assert parse_address("localhost:1").loopback
    for wide in ("0.0.0.0:8080", "[::]:8080", "192.0.2.7:8080"):
        address = parse_address(wide)
        assert not address.loopback
        with pytest.raises(ValueError, match="--ui-token"):
            resolve_token(address, None)
        assert resolve_token(address, TOKEN) == TOKEN
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert resolve_token(parse_address("0.0.0.0:8080"), None) == TOKEN
    with pytest.raises(ValueError, match="16 characters"):
        resolve_token(parse_address("0.0.0.0:8080"), "short")
    for bad in ("", "host:", "99999", "a:b:80", "http://x:80"):
        with pytest.raises(ValueError, match="expected PORT|must be in 0..65535"):
            parse_address(bad)


def _netns_or_skip():
    """A network namespace joined to this one by a veth pair: (namespace, the address it reaches us at). Skips
    where the machine cannot make one (not root, no `ip`, no network namespaces)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a non-loopback client needs a network namespace (root and iproute2); the gate's address rules "
                    "are tested above without one")
    ns, host_if, ns_if = f"m2s2l{os.getpid() % 100000}", f"m2h{os.getpid() % 100000}", f"m2n{os.getpid() % 100000}"
    # 198.18.0.0/15 is for benchmarking networks (RFC 2544): no real host uses it.
    steps = [["ip", "netns", "add", ns], ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
             ["ip", "link", "set", ns_if, "netns", ns], ["ip", "addr", "add", "198.18.22.1/30", "dev", host_if],
             ["ip", "link", "set", host_if, "up"],
             ["ip", "-n", ns, "addr", "add", "198.18.22.2/30", "dev", ns_if],
             ["ip", "-n", ns, "link", "set", ns_if, "up"], ["ip", "-n", ns, "link", "set", "lo", "up"]]
    for step in steps:
        r = subprocess.run(step, capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            subprocess.run(["ip", "link", "del", host_if], capture_output=True)
            pytest.skip(f"cannot make a network namespace here ({' '.join(step)}: {r.stderr.strip()})")
    return ns, host_if, "198.18.22.1"


_CLIENT = r"""
import json, sys, urllib.error, urllib.request
class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k): return None
out = []
for method, url, headers, body in json.loads(sys.argv[1]):
    req = urllib.request.Request(url, data=body.encode() if body else None, method=method, headers=headers)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as r:
            out.append([r.status, r.headers.get("set-cookie")])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.headers.get("set-cookie")])
print(json.dumps(out))
"""


@web
def test_a_page_from_a_non_loopback_address_needs_the_token(view):
    """The view listens on every interface with a token; a client in another network namespace (a real
    non-loopback source address) is refused every page, stream, picture and control without it."""
    ns, host_if, address = _netns_or_skip()
    try:
        start, snaps = view
        port = int(start("0.0.0.0:0", TOKEN).rsplit(":", 1)[1])
        (snaps / "cam0-anomaly-1.jpg").write_bytes(b"\xff\xd8\xff\xd9")
        base = f"http://{address}:{port}"
        json_post = {"Content-Type": "application/json"}
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        asks = [["GET", base + "/", {}, None], ["GET", base + "/api/state", {}, None],
                ["GET", base + "/api/stream", {}, None], ["GET", base + "/static/app.js", {}, None],
                ["GET", base + "/api/cameras/cam0/frame.jpg", {}, None], ["GET", base + "/media/cam0-anomaly-1.jpg",
                                                                          {}, None],
                ["POST", base + "/api/cameras/cam0/threshold", json_post, '{"threshold": 3}'],
                ["GET", base + "/?token=wrong-token-of-enough-chars", {}, None],
                ["GET", base + "/api/state", {"Authorization": "Bearer not-the-token-xxxxxxxx"}, None],
                # with the token: served; ?token= trades it for a cookie and drops it from the address
                ["GET", base + "/api/state", bearer, None], ["GET", base + "/media/cam0-anomaly-1.jpg", bearer, None],
                ["GET", base + f"/?token={TOKEN}", {}, None],
                ["GET", base + "/api/state", {"Cookie": f"m2s2l_ui_{port}={TOKEN}"}, None]]
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _CLIENT, json.dumps(asks)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert [s for s, _ in got[:9]] == [401] * 9, got
        assert [s for s, _ in got[9:11]] == [200, 200] and got[11][0] == 303, got
        assert f"m2s2l_ui_{port}={TOKEN}" in got[11][1] and "HttpOnly" in got[11][1], got
        assert got[12][0] == 200, got
        # The same address from this namespace is not loopback either: refused too without the token.
        assert _request(base + "/api/state")[0] == 401
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


def test_wide_bind_without_a_token_and_a_missing_extra_are_one_line(tmp_path, monkeypatch):
    from m2s2l_edge.ui.bind import TOKEN_ENV

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    clip = _write_avi(tmp_path / "c.avi", np.zeros((8, 32, 32, 3), np.uint8))
    for args, fragment in ((["--ui", "0.0.0.0:8080"], "--ui-token"), (["--ui", "nonsense"], "expected PORT"),
                           (["--ui", "0.0.0.0:8080", "--ui-token", "short"], "16 characters"),
                           (["--ui-token", TOKEN], "--ui-token goes with --ui")):
        r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(clip), *args])
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], \
            r.output
    # A port already taken: one line, exit 1.
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--source", str(clip), "--ui", str(port)])
    lines = [ln for ln in r.output.splitlines() if ln.strip() and not ln.startswith("INFO")]
    assert r.exit_code == 1 and lines == [f"error: cannot serve the web view on 127.0.0.1:{port}: Address already "
                                          "in use"], r.output
    # Without the [ui] extra: one line naming it, exit 3, before any model loads.
    probe = ("import sys; sys.modules['starlette'] = None; sys.modules['uvicorn'] = None; "
             "from m2s2l_edge.cli.app import main; sys.argv = ['m2s2l-edge', 'watch', '--preset', 'tiny', "
             f"'--source', {str(clip)!r}, '--ui', '0']; main()")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("INFO")]
    assert r.returncode == 3 and lines == ["error: --ui needs Starlette and uvicorn: pip install 'm2s2l-edge[ui]'"], \
        r.stderr


# --- saving settings through watch --config's parser --------------------------------------------------------------


@web
def test_saving_keeps_comments_and_never_writes_a_file_watch_would_refuse(footage, tmp_path):
    from m2s2l_edge.ui.config_file import save_camera
    from m2s2l_edge.watch.cameras import load_cameras

    config = tmp_path / "cameras.yaml"
    text = footage["config"].read_text().replace("    faults:", "    off_threshold: 2.0\n    faults:")
    config.write_text(text)
    for name in ("plaza.avi", "plaza.calib.json"):
        (tmp_path / name).symlink_to(footage["root"] / name)
    save_camera(config, "plaza", threshold=4.5, rois=[[[0, 0], [64, 0], [64, 64.25]]], frame_size=(128, 128))
    saved = load_cameras(config)[0]
    assert saved.threshold == 4.5 and saved.roi == (((0.0, 0.0), (64.0, 0.0), (64.0, 64.25)),)
    after = config.read_text()
    assert after.startswith("# the plaza camera") and "roi: [[[0, 0], [64, 0], [64, 64.25]]]" in after
    for change, fragment in (({"threshold": 1.5}, "off_threshold 2.0 must be below threshold 1.5"),
                             ({"rois": [[[0, 0], [200, 0], [0, 50]]]}, "outside the 128x128 frame"),
                             ({"rois": [[[0, 0], [1, 1], [2, 2]]]}, "zero area")):
        with pytest.raises(ValueError, match=fragment):
            save_camera(config, "plaza", frame_size=(128, 128), **change)
        assert config.read_text() == after  # untouched
    with pytest.raises(ValueError, match="no camera 'yard'"):
        save_camera(config, "yard", threshold=3.0)
    save_camera(config, "plaza", threshold=None, rois=[])
    saved = load_cameras(config)[0]
    assert saved.threshold is None and saved.roi == () and "roi" not in config.read_text()
    assert not list(tmp_path.glob(".cameras.yaml.*"))  # no temporary left behind


# --- the reports in a browser ------------------------------------------------------------------------------------


def _rendered(d, path: Path) -> dict:
    d.get(path.as_uri())
    browser.wait_until(d, "return [...document.images].every(i => i.complete) && document.querySelector('canvas')",
                       20, "the report's pictures and charts")
    return d.execute_script("""return {images: document.images.length,
        broken: [...document.images].filter(i => !(i.naturalWidth > 0)).map(i => i.alt),
        canvases: document.querySelectorAll('canvas').length,
        sections: [...document.querySelectorAll('section.item h2')].map(h => h.textContent)};""")


@needs_browser
def test_eval_report_opens_from_disk_with_its_pictures(tmp_path):
    from m2s2l_edge.artifacts.checkpoint import save_checkpoint
    from m2s2l_edge.data import generate_dataset
    from m2s2l_edge.models import create_model

    generate_dataset(tmp_path / "data", name="synthetic", n_train=1, n_test=3, frames=48, size=64, seed=0)
    weights = tmp_path / "tiny.pt"
    save_checkpoint(weights, create_model("tiny", seed=0), extra={"dataset": "synthetic"})
    out = tmp_path / "eval"
    r = CliRunner().invoke(app, ["eval", "--data", str(tmp_path / "data"), "--dataset", "synthetic", "--weights",
                                 str(weights), "--out", str(out), "--threads", "1"])
    assert r.exit_code == 0, r.output
    report = out / "report.html"
    assert f"report: {report}" in " ".join(r.output.split())  # the path it prints is the report's
    html = report.read_text()
    assert "<script src=" not in html and "<link" not in html  # nothing to fetch: it opens from disk alone
    with browser.chromium(1200, 900) as d:
        page = _rendered(d, report)
        browser.screenshot(d, "report-eval")
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
    assert page["broken"] == [] and page["images"] == 3 * 3 * 3, page  # 3 videos × 3 frames × input/prediction/error
    assert page["canvases"] >= 1 + 3 and page["sections"] == ["01", "02", "03"], page
    assert errors == []
    results = json.loads((out / "results.json").read_text())
    assert results["files"]["report"] == str(report)
    assert all(len(v["top_frames"]) == 3 for v in results["per_video"])



@pytest.mark.slow
@needs_browser
def test_eval_report_of_the_vtest_validation_set_renders_every_video(tmp_path):
    """eval on the real-footage validation set (vtest.avi, source frames 0–479): its report.html shows all 15 test
    videos with their worst frames, each picture decoded by Chromium."""
    from footage import vtest as V

    from m2s2l_edge.artifacts.checkpoint import save_checkpoint
    from m2s2l_edge.models import create_model

    source = V.find_vtest()
    if source is None:
        pytest.skip("vtest.avi not found: apt-get install -y opencv-doc (Debian package opencv-doc)")
    data = tmp_path / "vtest"
    V.build_vtest_set(source, data)
    weights = tmp_path / "tiny.pt"
    save_checkpoint(weights, create_model("tiny", seed=0), extra={"dataset": "custom"})
    out = tmp_path / "eval"
    r = CliRunner().invoke(app, ["eval", "--data", str(data), "--dataset", "custom", "--weights", str(weights),
                                 "--labels", str(data / V.LABELS_FILE), "--out", str(out), "--threads", "1",
                                 "--no-plots"])
    assert r.exit_code == 0, r.output
    videos = sorted(p.name for p in (data / "testing" / "frames").iterdir())
    assert len(videos) == 15
    with browser.chromium(1200, 900) as d:
        page = _rendered(d, out / "report.html")
        browser.screenshot(d, "report-eval-vtest")
    assert page["broken"] == [] and page["images"] == 15 * 3 * 3, page  # 15 videos × 3 frames × 3 pictures
    assert page["sections"] == videos, page

@web
@needs_browser
def test_watch_replay_writes_a_report_with_its_events(footage, tmp_path):
    report, snaps = tmp_path / "run.html", tmp_path / "snaps"
    r = CliRunner().invoke(app, ["watch", "--preset", "tiny", "--config", str(footage["config"]), "--replay",
                                 "--snapshots", str(snaps), "--report", str(report), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert f"report: {report}" in r.output
    with browser.chromium(1200, 900) as d:
        page = _rendered(d, report)
        browser.screenshot(d, "report-watch")
        events = d.execute_script("return [...document.querySelectorAll('table.events td.kind')]"
                                  ".map(td => td.textContent)")
    assert page["broken"] == [] and page["sections"] == ["plaza"], page
    # 3 most anomalous frames × frame / overlay / error map, and a snapshot per anomaly event
    assert events.count("anomaly") == len(STALLS) and events.count("frozen") == len(STALLS), events
    assert page["images"] == 3 * 3 + len(STALLS), page
