"""The web view's HTTP server: a Starlette app served by uvicorn on a thread of its own, reading a
:class:`~m2s2l_edge.watch.live.LiveFeed`.

Routes (all behind :class:`Gate`):

    GET  /                              the page (static/index.html; its scripts and styles under /static/)
    GET  /api/state                     cameras, their settings and health, the newest events, the run
    GET  /api/stream                    server-sent events: every 250 ms the new score points, messages and each
                                        camera's latest verdict; every second the cameras' health
    GET  /api/cameras/{id}/frame.jpg    the newest scored frame, error map over it (``overlay=0``: the bare frame,
                                        for the region editor); 204 when none is newer than ``after=SEQ``
    GET  /api/events/{id}/curve         the score around an event
    POST /api/cameras/{id}/threshold    {"threshold": number | null}: takes effect at the next batch
    POST /api/cameras/{id}/rois         {"rois": [[[x, y], ...], ...]}: takes effect at the next batch
    POST /api/cameras/{id}/save         {"threshold": ..., "rois": ...}: written to the --config file, then applied
    GET  /media/{name}                  a snapshot or clip from the --snapshots folder (a bare file name only)

Pictures are encoded here, on the server's worker threads, when a page asks for them (a page asks when a tick shows a
newer frame, at most every 250 ms per camera; one encoding per frame however many pages look), so a watch nobody
looks at encodes nothing. No request waits: six cameras and the stream fit a browser's connections to one host.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import socket
import threading
import time
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from m2s2l_edge.ui import INSTALL_UI
from m2s2l_edge.ui.bind import UIAddress

logger = logging.getLogger(__name__)

TICK_S = 0.25  # the page's refresh: score points, messages and verdicts
HEALTH_EVERY = 4  # ticks between two health snapshots (1 s)
LIVE_SIDE = 640  # longest side of a live picture, pixels
EDITOR_SIDE = 1280  # longest side of the region editor's picture
_MEDIA_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.(jpg|mp4)$")
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def check_installed() -> None:
    """RuntimeError naming the extra to install when Starlette or uvicorn is missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise RuntimeError(f"--ui needs Starlette and uvicorn: {INSTALL_UI}") from None


class Gate:
    """ASGI middleware in front of every route.

    With a token: a request must carry it as the page's cookie, an ``Authorization: Bearer`` header, or ``?token=``
    (a page opened with ``?token=`` gets the cookie and is redirected to the same URL without it, so the token does
    not stay in the address bar or the history); else 401. Bound to loopback without a token: the ``Host`` header
    must name loopback (a web page elsewhere cannot reach the view through DNS rebinding). Always: a POST must be
    JSON and, when the browser says where it comes from (``Origin``), come from the view itself — a page of another
    site cannot change a threshold through the operator's browser.
    """

    def __init__(self, app, token: str | None, port_ref: list[int]) -> None:
        self.app, self.token, self.port_ref = app, token, port_ref

    @property
    def cookie_name(self) -> str:
        return f"m2s2l_ui_{self.port_ref[0]}"  # cookies ignore ports: one per view on this host

    def _ok(self, supplied: str | None) -> bool:
        return supplied is not None and hmac.compare_digest(supplied.encode(), self.token.encode())

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        host = headers.get("host", "")
        if self.token is None:
            hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if hostname not in _LOOPBACK_HOSTS:
                await _plain(send, 403, "the web view answers only to a loopback Host (127.0.0.1, localhost)")
                return
        else:
            try:
                cookie = SimpleCookie(headers.get("cookie", ""))
            except CookieError:  # another site's malformed cookie on this host: as if none
                cookie = SimpleCookie()
            supplied = cookie[self.cookie_name].value if self.cookie_name in cookie else None
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                supplied = auth[7:].strip()
            in_query = query.get("token", [None])[0]
            if in_query is not None and self._ok(in_query) and scope["method"] == "GET":
                rest = {k: v for k, v in query.items() if k != "token"}
                location = scope["path"] + (("?" + urlencode(rest, doseq=True)) if rest else "")
                await send({"type": "http.response.start", "status": 303, "headers": [
                    (b"location", location.encode("latin-1")),
                    (b"set-cookie", f"{self.cookie_name}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()),
                    (b"cache-control", b"no-store")]})
                await send({"type": "http.response.body", "body": b""})
                return
            if not self._ok(supplied):
                await _plain(send, 401, "this web view needs its token: open the URL the watch printed "
                                        "(…/?token=…), or send 'Authorization: Bearer TOKEN'")
                return
        if scope["method"] not in ("GET", "HEAD", "POST"):
            await _plain(send, 405, "method not allowed")
            return
        if scope["method"] == "POST":
            if not headers.get("content-type", "").startswith("application/json"):
                await _plain(send, 415, "controls take JSON (Content-Type: application/json)")
                return
            origin = headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1] != host:
                await _plain(send, 403, "a control request from another site is refused")
                return
        await self.app(scope, receive, send)


async def _plain(send, status: int, text: str) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


def _point(p) -> list:
    # (seq, frame, stream_time, wall_time, score, raw_score, threshold, open)
    return [p[1], p[2], p[3], p[4], p[5], p[6], 1 if p[7] else 0]


def _verdict(feed, camera: str) -> dict[str, Any] | None:
    seq, fs = feed.latest(camera)
    if fs is None:
        return None
    last = feed.last_point(camera)
    return {"seq": seq, "frame": int(fs.frame_index), "stream_time": round(float(fs.stream_time), 3),
            "wall_time": round(float(fs.wall_time), 3), "raw_score": _num(fs.score),
            "score": last[4] if last else None, "threshold": last[6] if last else None,
            "event_open": bool(last[7]) if last else False}


def _num(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 4)


def _media_name(path: str | None) -> str | None:
    """The bare file name the page asks /media/ for (None for a path that is not a snapshot or clip)."""
    if not path:
        return None
    name = Path(path).name
    return name if _MEDIA_NAME.match(name) else None


def _with_media(msg: dict) -> dict:
    out = dict(msg)
    if msg.get("type") == "event":
        out["snapshot_url"] = f"/media/{n}" if (n := _media_name(msg.get("snapshot"))) else None
        out["clip_url"] = f"/media/{n}" if (n := _media_name(msg.get("clip"))) else None
    return out


def build_app(feed, *, token: str | None, config_path: Path | None, media_dir: Path | None,
              port_ref: list[int], stopping: threading.Event):
    """The Starlette app of the web view for ``feed`` (see the module docstring)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    static = Path(str(resources.files("m2s2l_edge.ui").joinpath("static")))
    shared = Path(str(resources.files("m2s2l_edge.report").joinpath("static")))
    media_root = media_dir.resolve() if media_dir is not None else None
    pictures: dict[tuple[str, bool], tuple[int, bytes]] = {}
    picture_locks: dict[tuple[str, bool], asyncio.Lock] = {}

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def camera_of(request: Request) -> str | None:
        camera = request.path_params["camera"]
        return camera if camera in feed.cameras else None

    def settings_of(camera: str) -> dict[str, Any]:
        controls = feed.controls
        if controls is None:
            return {"camera": camera, "threshold": None, "threshold_source": None, "calibrated": False,
                    "off_threshold": None, "rois": [], "frame_size": None}
        return controls.settings(camera)

    async def index(request: Request) -> Response:
        return FileResponse(static / "index.html", headers={"cache-control": "no-store"})

    async def state(request: Request) -> Response:
        health = await run_in_threadpool(feed.health)
        cams = []
        for c in feed.cameras:
            s = settings_of(c)
            online, reason = feed.status(c)
            cams.append({"id": c, "settings": s, "health": health.get(c), "verdict": _verdict(feed, c),
                         "online": online, "status_reason": reason,
                         "points": [_point(p) for p in feed.points(c)][-1500:]})
        return JSONResponse({"seq": feed.seq, "cameras": cams, "run": feed.info,
                             "events": [_with_media(m) for m in feed.events(200)],
                             "config": str(config_path) if config_path is not None else None,
                             "media": media_root is not None, "tick_s": TICK_S})

    async def stream(request: Request) -> Response:
        after = int(request.query_params.get("after", "0") or 0)
        points_after = {c: after for c in feed.cameras}

        async def ticks():
            nonlocal after
            n = 0
            yield "retry: 2000\n\n"
            while not stopping.is_set():
                if await request.is_disconnected():
                    return
                payload: dict[str, Any] = {"seq": feed.seq}
                points = {}
                for c in feed.cameras:
                    new = feed.points(c, points_after[c])
                    if new:
                        points_after[c] = new[-1][0]
                        points[c] = [_point(p) for p in new[-1500:]]
                payload["points"] = points
                messages = feed.messages(after)
                if messages:
                    after = messages[-1][0]
                payload["messages"] = [_with_media(m) for _, m in messages]
                payload["verdicts"] = {c: _verdict(feed, c) for c in feed.cameras}
                if n % HEALTH_EVERY == 0:
                    payload["health"] = await run_in_threadpool(feed.health)
                    payload["settings"] = {c: settings_of(c) for c in feed.cameras}
                    payload["run"] = feed.info
                n += 1
                yield f"data: {json.dumps(payload, allow_nan=False, default=str)}\n\n"
                await asyncio.sleep(TICK_S)

        return StreamingResponse(ticks(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    def encode(fs, overlay: bool) -> bytes:
        from m2s2l_edge.report.images import VIDEO_VMAX, encode_jpeg, fit_width, heat_overlay

        frame = fit_width(fs.frame, LIVE_SIDE if overlay else EDITOR_SIDE)
        image = heat_overlay(frame, fs.error_map, vmax=VIDEO_VMAX) if overlay else frame
        return encode_jpeg(image, 80)

    async def frame(request: Request) -> Response:
        camera = camera_of(request)
        if camera is None:
            return error(404, "no such camera")
        overlay = request.query_params.get("overlay", "1") != "0"
        after = int(request.query_params.get("after", "0") or 0)
        seq, fs = feed.latest(camera)
        if fs is None or seq <= after:
            return Response(status_code=204, headers={"cache-control": "no-store"})
        key = (camera, overlay)
        lock = picture_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = pictures.get(key)
            if cached is None or cached[0] != seq:
                cached = (seq, await run_in_threadpool(encode, fs, overlay))
                pictures[key] = cached
        return Response(cached[1], media_type="image/jpeg", headers={
            "cache-control": "no-store", "x-seq": str(cached[0]), "x-frame": str(int(fs.frame_index))})

    async def curve(request: Request) -> Response:
        pts = feed.curve(request.path_params["event"])
        if pts is None:
            return error(404, "no score points for this event (unknown, or older than the live window)")
        return JSONResponse({"points": [_point(p) for p in pts]})

    async def body_of(request: Request) -> dict:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise ValueError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        return body

    async def control(request: Request, action) -> Response:
        camera = camera_of(request)
        if camera is None:
            return error(404, "no such camera")
        if feed.controls is None:
            return error(503, "the watch is still starting; try again in a moment")
        try:
            body = await body_of(request)
            result = await run_in_threadpool(action, camera, body)
        except (ValueError, TypeError, KeyError) as e:
            return error(400, str(e).strip("'\""))
        except RuntimeError as e:
            return error(500, str(e))
        return JSONResponse({**result, "settings": settings_of(camera)})

    def set_threshold(camera: str, body: dict) -> dict:
        return feed.controls.set_threshold(camera, body.get("threshold"))

    def set_rois(camera: str, body: dict) -> dict:
        return feed.controls.set_rois(camera, body.get("rois") or [])

    def save(camera: str, body: dict) -> dict:
        from m2s2l_edge.ui.config_file import save_camera

        if config_path is None:
            raise ValueError("this watch was started with --source, so there is no file to save to: start it "
                             "with --config cameras.yaml to save settings (applied to this run, they last until "
                             "it ends)")
        changes: dict[str, Any] = {}
        if "threshold" in body:
            changes["threshold"] = body["threshold"]
        if "rois" in body:
            changes["rois"] = body["rois"] or []
        if not changes:
            raise ValueError("nothing to save: give threshold and/or rois")
        size = feed.frame_size(camera)
        save_camera(config_path, camera, frame_size=size, **changes)
        # Saved and valid: the run takes it too (threshold None: back to the file's or the calibration's).
        if "threshold" in changes:
            feed.controls.set_threshold(camera, changes["threshold"])
        if "rois" in changes:
            feed.controls.set_rois(camera, changes["rois"])
        return {"saved": str(config_path)}

    async def post_threshold(request: Request) -> Response:
        return await control(request, set_threshold)

    async def post_rois(request: Request) -> Response:
        return await control(request, set_rois)

    async def post_save(request: Request) -> Response:
        return await control(request, save)

    async def media(request: Request) -> Response:
        name = request.path_params["name"]
        if media_root is None or not _MEDIA_NAME.match(name):
            return error(404, "no such file")
        path = (media_root / name).resolve()
        if path.parent != media_root or not path.is_file():
            return error(404, "no such file")
        return FileResponse(path, headers={"cache-control": "private, max-age=3600"})

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/stream", stream),
        Route("/api/cameras/{camera}/frame.jpg", frame),
        Route("/api/events/{event}/curve", curve),
        Route("/api/cameras/{camera}/threshold", post_threshold, methods=["POST"]),
        Route("/api/cameras/{camera}/rois", post_rois, methods=["POST"]),
        Route("/api/cameras/{camera}/save", post_save, methods=["POST"]),
        Route("/media/{name}", media),
        Mount("/static/shared", app=StaticFiles(directory=shared)),
        Mount("/static", app=StaticFiles(directory=static)),
    ]
    app = Starlette(routes=routes)
    return Gate(app, token, port_ref)


class UIServer:
    """The web view of ``feed`` on ``address``, served by uvicorn on a daemon thread.

    ``start()`` binds (ValueError when the address cannot be bound) and returns the URL to open (with ``?token=``
    when there is one); ``stop()`` ends open streams and the server within about a second.
    """

    def __init__(self, feed, address: UIAddress, *, token: str | None = None, config_path: Path | None = None,
                 media_dir: Path | None = None) -> None:
        check_installed()
        self.feed, self.address, self.token = feed, address, token
        self.config_path, self.media_dir = config_path, media_dir
        self.port: int | None = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def _bind(self) -> socket.socket:
        sock = socket.socket(self.address.family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.address.host, self.address.port))
            sock.listen(64)
        except OSError as e:
            sock.close()
            raise ValueError(f"cannot serve the web view on {self.address.host}:{self.address.port}: "
                             f"{e.strerror or e}") from None
        sock.setblocking(False)
        return sock

    def start(self) -> str:
        import uvicorn

        sock = self._bind()
        self.port = int(sock.getsockname()[1])
        port_ref = [self.port]
        app = build_app(self.feed, token=self.token, config_path=self.config_path, media_dir=self.media_dir,
                        port_ref=port_ref, stopping=self._stopping)
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", ws="none",
                                http="h11", loop="asyncio", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="m2s2l-ui",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise RuntimeError("the web view's server did not start")
        return self.url

    @property
    def url(self) -> str:
        base = self.address.url(self.port)
        return base + (f"?token={self.token}" if self.token else "")

    @property
    def shown_url(self) -> str:
        """The URL as safe to print in a log: the token masked."""
        return self.address.url(self.port) + ("?token=***" if self.token else "")

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
