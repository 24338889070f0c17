"""Where event messages go: JSON lines, a webhook, MQTT — all behind one small interface, none blocking inference.

Every sink takes the messages of :mod:`.events` / :mod:`.faults` (``emit``) and camera online / offline changes
(``status``). Contracts:

- :class:`JsonlSink` (``--events FILE|-``): one JSON object per line, appended and flushed at once, so a reader
  (``tail -f``) sees each event change as it happens and a crash loses nothing already emitted.
- :class:`WebhookSink` (``--webhook URL``): HTTP POST of each message as JSON from a background thread through a
  bounded queue; ``emit`` only enqueues. Timeout per attempt, retries with exponential backoff on network errors
  and 5xx / 429 answers (a 4xx other than 429 is not retried). A full queue drops the new message and counts it.
- :class:`MqttSink` (``--mqtt mqtt://host:port/prefix``): paho-mqtt, QoS 1. Events on ``<prefix>/<camera>/events``;
  retained camera status on ``<prefix>/<camera>/status``; the process's retained ``<prefix>/status`` is "online"
  while it runs and the broker's last will sets it to "offline" if the process dies without closing. paho's
  network loop runs on its own thread and reconnects by itself; publishing only queues (bounded, drops counted).
- :class:`SinkSet` fans out to several sinks; one sink raising never stops the others.

Errors at construction (before any work starts): a malformed URL, an unwritable events file or an unreachable
broker are ValueError (bad input: exit 1) with one line; a missing paho-mqtt is RuntimeError (missing backend:
exit 3) naming the install command. A webhook is not contacted at start (a receiver that is down now may be up by
the first event; failures are logged and counted).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import queue
import stat
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import IO, Any, Protocol, runtime_checkable

from m2s2l_edge.scoring.terms import TERMS
from m2s2l_edge.urls import redact, redact_text, split_credentials

from .events import SCHEMA, iso_time

logger = logging.getLogger(__name__)

DEFAULT_MQTT_PREFIX = "m2s2l"
INSTALL_WATCH = "pip install 'm2s2l-edge[watch]'"


@runtime_checkable
class Sink(Protocol):
    def emit(self, msg: dict[str, Any]) -> None: ...

    def status(self, camera: str, online: bool, info: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def status_message(camera: str, online: bool, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record every sink sends for a camera going online / offline (``type`` "status")."""
    info = dict(info or {})
    wall = info.pop("wall_time", None)
    return {
        "type": "status",
        "schema": SCHEMA,
        "camera": camera,
        "online": bool(online),
        "time": iso_time(wall if wall is not None else time.time()),
        **info,
    }


def _dumps(msg: dict[str, Any]) -> str:
    # NaN / inf are not JSON: a consumer's parser would reject the whole line.
    return json.dumps(_finite(msg), separators=(",", ":"), ensure_ascii=False)


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


# ---------------------------------------------------------------------------------------------------- JSON lines


@dataclass
class JsonlStats:
    lines: int = 0  # records written
    failed: int = 0  # records not written (the file could not take them: a full disk, an I/O error)
    repaired_bytes: int = 0  # bytes of a torn last line an interrupted run left, removed at open
    last_error: str | None = None


# An existing events file is checked to be JSON lines on its first line, read up to this many bytes.
_PROBE_BYTES = 1 << 16


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def check_events_target(path: str | os.PathLike) -> None:
    """ValueError when an existing ``path`` does not hold JSON lines (a video, a summary): events are never appended to
    it. Reads its first line only; creates nothing."""
    path = str(path)
    if path == "-" or not os.path.isfile(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb") as f:
        head = f.read(_PROBE_BYTES)
    first, newline, _ = head.partition(b"\n")
    if not (_is_record(first) if newline else first.startswith(b'{"')):
        raise ValueError(f"--events {path} holds something other than JSON lines (an input, a summary?); refusing to "
                         "append events to it")


class JsonlSink:
    """JSON lines to a file (appended) or to stdout (``"-"``); every line is written and flushed when emitted.

    The file stays valid JSON lines whatever happens: each record goes out as one ``write`` of a whole line, and a
    write the file cannot take (a full disk) is cut back to the last complete line, counted in ``stats.failed`` and
    reported once (a warning, the summary, the metrics); later records are tried again, so the file resumes once
    there is room. A torn last line that a crash or a full disk left behind is removed when the file is opened (a
    warning says how many bytes), so the next record never glues onto it. An existing file that does not hold JSON
    lines (a video, a summary) is refused rather than appended to.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.stats = JsonlStats()
        self._lock = threading.Lock()
        self._failing = False
        self._fd: int | None = None
        self._regular = False
        self._closed = False
        if self.path == "-":
            return
        if os.path.isdir(self.path):
            raise ValueError(f"cannot write events to {self.path}: it is a folder")
        try:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            except PermissionError:  # a file we may append to but not read: written, never repaired
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as e:
            raise ValueError(f"cannot write events to {self.path}: {e.strerror or e}") from None
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)  # not a pipe or a device (/dev/stdout)
        try:
            self._check_and_repair()
        except BaseException:
            os.close(self._fd)
            self._fd = None
            raise

    @property
    def lines(self) -> int:
        return self.stats.lines

    def _check_and_repair(self) -> None:
        fd = self._fd
        if not self._regular:
            return
        try:
            check_events_target(self.path)
        except PermissionError:
            return  # not readable: nothing to check or repair
        size = os.fstat(fd).st_size
        if size == 0:
            return
        # The last complete line ends at the last newline; what follows it is a record the writer did not finish.
        keep, end = 0, size
        while end > 0:
            start = max(0, end - _PROBE_BYTES)
            i = os.pread(fd, end - start, start).rfind(b"\n")
            if i != -1:
                keep = start + i + 1
                break
            end = start
        if keep == size:
            return
        tail = os.pread(fd, size - keep, keep)
        if _is_record(tail):  # complete but for its newline: keep it
            os.write(fd, b"\n")
            logger.warning("events file %s: its last record had no newline (an interrupted run); added one", self.path)
            return
        os.ftruncate(fd, keep)
        self.stats.repaired_bytes = size - keep
        logger.warning("events file %s ended in a torn record (%d bytes, left by an interrupted run or a full disk); "
                       "removed it so that every line is valid JSON", self.path, size - keep)

    def _write(self, msg: dict[str, Any]) -> None:
        data = (_dumps(msg) + "\n").encode("utf-8")
        with self._lock:
            if self._closed:
                return
            if self._fd is None:
                self._write_stdout(data)
                return
            start = os.fstat(self._fd).st_size if self._regular else 0
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
            except OSError as e:
                # Cut the partial record off, so the file ends in a complete line (ftruncate frees space, it works
                # on a full disk).
                try:
                    if self._regular and os.fstat(self._fd).st_size != start:
                        os.ftruncate(self._fd, start)
                except OSError as cut:
                    logger.error("events file %s: could not remove a partial record (%s)", self.path, cut)
                self._failed(e)
                return
            self.stats.lines += 1
            if self._failing:
                self._failing = False
                logger.warning("events file %s: writing again (%d record(s) lost before)", self.path,
                               self.stats.failed)

    def _write_stdout(self, data: bytes) -> None:
        try:
            sys.stdout.write(data.decode("utf-8"))
            sys.stdout.flush()
        except (OSError, ValueError) as e:  # a closed pipe
            self._failed(e)
            return
        self.stats.lines += 1

    def _failed(self, e: BaseException) -> None:
        self.stats.failed += 1
        self.stats.last_error = getattr(e, "strerror", None) or str(e)
        if not self._failing:
            self._failing = True
            logger.error("events file %s: a record could not be written (%s); records are lost until it can take "
                         "them again (counted in the summary and the metrics)", self.path, self.stats.last_error)

    def emit(self, msg: dict[str, Any]) -> None:
        self._write(msg)

    def status(self, camera: str, online: bool, info: dict[str, Any]) -> None:
        self._write(status_message(camera, online, info))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._fd is not None:
                try:
                    if self._regular:  # a device or a pipe has nothing to sync
                        os.fsync(self._fd)
                except OSError as e:
                    logger.warning("events file %s: fsync at close failed: %s", self.path, e)
                os.close(self._fd)
                self._fd = None


class ScoreTable:
    """``--scores FILE|-``: one CSV row per scored frame, in the column names of ``eval``'s per-frame table
    (:data:`m2s2l_edge.scoring.terms.FRAME_COLUMNS`) plus the camera, the stream time, the unsmoothed calibrated score
    (``raw_score``; ``score`` is the smoothed one the threshold applies to), the threshold in force (empty while a
    camera calibrates itself) and whether an event is open. A file is written anew by each run. The table is for
    reading the scores, not an alert path: a write that fails (a full disk) is reported once and ends the table, never
    the watch."""

    COLUMNS = ("camera", "frame", "stream_time", *TERMS, "fused_psnr", "raw_score", "score", "threshold",
               "event_open")

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        self.rows = 0
        self.error: str | None = None
        if self.path == "-":
            self._fh: IO[str] = sys.stdout
            self._own = False
        else:
            try:
                self._fh = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in close()
            except OSError as e:
                raise ValueError(f"cannot write --scores {self.path}: {e.strerror or e}") from None
            self._own = True
        self._guard(lambda: self._fh.write(",".join(self.COLUMNS) + "\n"))

    def _guard(self, action) -> None:
        if self.error is not None:
            return
        try:
            action()
        except OSError as e:
            self.error = e.strerror or str(e)
            logger.warning("--scores %s: %s; no further rows are written (the watch goes on)", self.path, self.error)

    def write(self, fs, smoothed: float | None, threshold: float | None, event_open: bool) -> None:
        """One row for the frame score ``fs`` (a :class:`~m2s2l_edge.watch.types.FrameScore`), its smoothed score
        (None: not smoothed) and the threshold in force (None: none yet)."""
        threshold = "" if threshold is None else f"{threshold:.6f}"
        score = fs.score if smoothed is None else smoothed
        cells = [_csv_cell(fs.camera), str(int(fs.frame_index)), f"{fs.stream_time:.6f}",
                 *(f"{fs.terms[k]:.6f}" if k == "change" else f"{fs.terms[k]:.4f}" for k in TERMS),
                 f"{fs.fused:.4f}", f"{fs.score:.6f}", f"{score:.6f}", threshold, "1" if event_open else "0"]
        self._guard(lambda: self._fh.write(",".join(cells) + "\n"))
        if self.error is None:
            self.rows += 1

    def flush(self) -> None:
        self._guard(self._fh.flush)

    def close(self) -> None:
        if self._fh.closed:
            return
        self.flush()
        if self._own:
            self._guard(lambda: os.fsync(self._fh.fileno()))
            try:
                self._fh.close()
            except OSError:  # its last flush failed: already reported
                pass

    def summary(self) -> dict:
        return {"path": self.path, "rows": self.rows, "error": self.error}


def _csv_cell(text: str) -> str:
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text


# ---------------------------------------------------------------------------------------------------- webhook


@dataclass
class WebhookStats:
    sent: int = 0
    failed: int = 0  # gave up after the last retry, or a 4xx answer
    dropped: int = 0  # queue full, or still queued at close
    retries: int = 0


def parse_webhook_url(url: str) -> tuple[str, str | None, str | None]:
    """``http(s)://[user:password@]host[:port]/path[?query]`` → (the URL without its user-info, user, password);
    ValueError (showing the URL redacted) otherwise."""
    target, user, password = split_credentials(url)
    parts = urllib.parse.urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL must be http(s)://host[:port]/path, got {redact(url)!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError(f"webhook URL {redact(url)!r} has an invalid port") from None
    return target, user, password


class _KeepPost(urllib.request.HTTPRedirectHandler):
    """Redirects of a POST: 307 and 308 are followed with the same method and body (what they mean); 301, 302 and
    303 would turn the POST into a bodiless GET, so they are not followed and the attempt fails (the receiver's URL
    is wrong). Credentials go along only to the same scheme, host and port."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if code not in (307, 308):
            return None  # urllib then raises HTTPError(code): counted as a failed delivery
        new = urllib.parse.urlsplit(newurl)
        old = urllib.parse.urlsplit(req.full_url)
        same_origin = (new.scheme, new.hostname, new.port) == (old.scheme, old.hostname, old.port)
        headers = {k: v for k, v in req.header_items() if same_origin or k.lower() != "authorization"}
        return urllib.request.Request(newurl, data=req.data, headers=headers, method=req.get_method(),
                                      origin_req_host=req.origin_req_host, unverifiable=True)


class WebhookSink:
    """POST each message as JSON to ``url``; never blocks the caller.

    Credentials in the URL (``https://user:password@host/hook``) are sent as HTTP Basic auth, never as part of the
    host name; the URL is shown everywhere with its password and secret query values masked
    (:func:`m2s2l_edge.urls.redact`). A 307 / 308 redirect is followed with the body; 301 / 302 / 303 (which would
    turn the POST into a bodiless GET) count as a failed delivery.

    timeout: seconds per attempt (connect + answer); retries: further attempts after a failed one, with backoff
    ``backoff``·2^k seconds (capped at 30 s); queue_size: messages waiting at most; close_timeout: how long
    :meth:`close` waits for the queue to drain before giving up on what is left (counted as dropped).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        queue_size: int = 1000,
        close_timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.shown = redact(url)
        target, user, password = parse_webhook_url(url)
        for name, v in (("timeout", timeout), ("backoff", backoff)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"webhook {name} must be a number > 0 (seconds), got {v!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"webhook retries must be an integer >= 0, got {retries!r}")
        if not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"webhook queue_size must be an integer >= 1, got {queue_size!r}")
        self.url = target
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        self.close_timeout = float(close_timeout) if close_timeout is not None else self.timeout * (retries + 1) + 1
        self.headers = {"Content-Type": "application/json", "User-Agent": "m2s2l-edge", **(headers or {})}
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"
        self._opener = urllib.request.build_opener(_KeepPost())
        self.stats = WebhookStats()
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._warned_drop = False
        self._thread = threading.Thread(target=self._run, name="m2s2l-webhook", daemon=True)
        self._thread.start()

    def emit(self, msg: dict[str, Any]) -> None:
        if self._stop.is_set():
            self._count_drop()
            return
        try:
            self._queue.put_nowait(msg)
        except queue.Full:
            self._count_drop()

    def status(self, camera: str, online: bool, info: dict[str, Any]) -> None:
        self.emit(status_message(camera, online, info))

    def _count_drop(self) -> None:
        with self._lock:
            self.stats.dropped += 1
        if not self._warned_drop:
            self._warned_drop = True
            logger.warning("webhook %s: queue full or closed, dropping messages (counted)", self.shown)

    def _run(self) -> None:
        while True:
            try:
                msg = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            try:
                self._deliver(msg)
            finally:
                self._queue.task_done()

    def _deliver(self, msg: dict[str, Any]) -> None:
        body = _dumps(msg).encode("utf-8")
        for attempt in range(self.retries + 1):
            if attempt:
                with self._lock:
                    self.stats.retries += 1
                # Interruptible backoff: close() does not wait out a long sleep.
                if self._stop.wait(min(30.0, self.backoff * 2 ** (attempt - 1))):
                    why = "shut down before the retry"
                    break
            retry, why = self._post(body)
            if why is None:
                with self._lock:
                    self.stats.sent += 1
                return
            if not retry:
                break
            logger.debug("webhook %s: attempt %d failed: %s", self.shown, attempt + 1, why)
        with self._lock:
            self.stats.failed += 1
        logger.warning("webhook %s: message %s not delivered: %s", self.shown, msg.get("id", msg.get("type")), why)

    def _post(self, body: bytes) -> tuple[bool, str | None]:
        """One attempt: (worth retrying, error text or None on success)."""
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                resp.read()
                return False, None
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                where = e.headers.get("Location") if e.headers is not None else None
                return False, (f"HTTP {e.code} redirect{f' to {redact(where)}' if where else ''} not followed (it "
                               "would turn the POST into a GET without its body; give the final URL)")
            return (e.code >= 500 or e.code == 429), f"HTTP {e.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            return True, redact_text(f"{type(reason).__name__}: {reason}")

    def flush(self, timeout: float) -> bool:
        """Wait until the queue is empty and no POST is in flight; False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return self._queue.unfinished_tasks == 0

    def close(self) -> None:
        """Deliver what is queued (at most ``close_timeout`` seconds), then stop; what is left counts as dropped."""
        drained = self.flush(self.close_timeout)
        self._stop.set()
        if not drained:
            left = 0
            while True:
                try:
                    self._queue.get_nowait()
                    self._queue.task_done()
                    left += 1
                except queue.Empty:
                    break
            with self._lock:
                self.stats.dropped += left
            logger.warning("webhook %s: %d message(s) not delivered before shutdown", self.shown, left)
        self._thread.join(timeout=self.timeout + 1)


# ---------------------------------------------------------------------------------------------------- MQTT


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    prefix: str
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://[user[:password]@]host[:port][/prefix]`` (``mqtts://`` for TLS; ports 1883 / 8883; prefix m2s2l)."""
    shown = redact(url)
    # The password may hold '@', ':', '#' or '?' (split_credentials takes the user-info out whole first).
    bare, username, password = split_credentials(url)
    parts = urllib.parse.urlsplit(bare)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"MQTT URL must be mqtt://host[:port][/prefix] (or mqtts://), got {shown!r}")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ValueError(f"MQTT URL {shown!r} has an invalid port") from None
    prefix = parts.path.strip("/") or DEFAULT_MQTT_PREFIX
    # urlsplit reads '#' as a fragment and '?' as a query: both would silently vanish from the prefix.
    if any(c in prefix for c in "+#") or "//" in prefix or "#" in bare or parts.query:
        raise ValueError(f"MQTT topic prefix of {shown!r} may not hold '+', '#', '?' or empty levels")
    return MqttTarget(parts.hostname, port, prefix, parts.scheme == "mqtts", username, password)


def camera_topic(camera: str) -> str:
    """A camera id as one topic level: '/', '+', '#' and NUL would split or wildcard the topic, so they become '_'."""
    out = "".join("_" if c in "/+#\0" else c for c in camera)
    return out or "_"


@dataclass
class MqttStats:
    published: int = 0
    dropped: int = 0


class MqttSink:
    """Events and camera status to an MQTT broker (see the module docstring for the topics).

    connect_timeout: seconds to wait for the first connection; the broker not answering by then is a ValueError.
    max_queued: messages paho keeps while disconnected (beyond that, publishes are dropped and counted).
    """

    def __init__(
        self,
        url: str,
        client_id: str | None = None,
        qos: int = 1,
        connect_timeout: float = 5.0,
        max_queued: int = 1000,
        keepalive: int = 30,
    ) -> None:
        self.target = parse_mqtt_url(url)
        if qos not in (0, 1, 2):
            raise ValueError(f"MQTT qos must be 0, 1 or 2, got {qos!r}")
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise RuntimeError(f"MQTT needs paho-mqtt: {INSTALL_WATCH}") from None
        self._mqtt = mqtt
        t = self.target
        self.qos = qos
        self.client_id = client_id or f"m2s2l-edge-{os.getpid()}"
        self.process_topic = f"{t.prefix}/status"
        self.stats = MqttStats()
        self._cameras: set[str] = set()
        # Each camera's last status payload: re-published (retained) on every reconnection, since a broker that
        # restarted without persistence has forgotten it.
        self._status: dict[str, str] = {}
        self._connections = 0
        self._connected = threading.Event()
        self._lock = threading.Lock()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        if t.username is not None:
            client.username_pw_set(t.username, t.password)
        if t.tls:
            client.tls_set()
        will = json.dumps({"online": False, "client": self.client_id, "reason": "connection lost"})
        client.will_set(self.process_topic, will, qos=1, retain=True)
        client.max_queued_messages_set(max_queued)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # Bounds the TCP connect too: a host that drops packets would otherwise block for the OS's ~2 minutes.
        client.connect_timeout = connect_timeout
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        where = f"{t.host}:{t.port}"
        try:
            client.connect(t.host, t.port, keepalive=keepalive)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot reach MQTT broker {where}: {getattr(e, 'strerror', None) or e}") from None
        client.loop_start()
        if not self._connected.wait(connect_timeout):
            client.loop_stop()
            client.disconnect()
            why = f" ({self._refused})" if getattr(self, "_refused", None) else ""
            raise ValueError(f"MQTT broker {where} did not accept the connection within {connect_timeout:g} s{why}")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            logger.warning("MQTT broker refused the connection: %s", reason_code)
            return
        # On every (re)connection: the process is online, and each camera's last status is published again (retained):
        # a broker that restarted without persistence has lost the retained messages, and a dashboard subscribing
        # afterwards would learn no camera's state.
        client.publish(self.process_topic, json.dumps({"online": True, "client": self.client_id}), qos=1, retain=True)
        with self._lock:
            self._connections += 1
            again = dict(self._status) if self._connections > 1 else {}
        for camera, payload in sorted(again.items()):
            client.publish(self._status_topic(camera), payload, qos=self.qos, retain=True)
        if again:
            logger.info("MQTT reconnected; re-sent the retained status of %d camera(s)", len(again))
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code != 0:
            logger.warning("MQTT connection lost (%s); paho reconnects in the background", reason_code)

    def _publish(self, topic: str, payload: str, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=self.qos, retain=retain)
        with self._lock:
            if info.rc == self._mqtt.MQTT_ERR_SUCCESS or info.rc == self._mqtt.MQTT_ERR_NO_CONN:
                # NO_CONN with QoS > 0: paho keeps it and sends it after reconnecting.
                self.stats.published += 1
            else:
                self.stats.dropped += 1

    def emit(self, msg: dict[str, Any]) -> None:
        camera = str(msg.get("camera", "_"))
        self._publish(f"{self.target.prefix}/{camera_topic(camera)}/events", _dumps(msg))

    def _status_topic(self, camera: str) -> str:
        return f"{self.target.prefix}/{camera_topic(camera)}/status"

    def status(self, camera: str, online: bool, info: dict[str, Any]) -> None:
        payload = _dumps(status_message(camera, online, info))
        with self._lock:
            self._cameras.add(camera)
            self._status[camera] = payload
        self._publish(self._status_topic(camera), payload, True)

    def close(self, timeout: float = 5.0) -> None:
        """Mark every camera and the process offline (retained), deliver what is queued, disconnect."""
        for camera in sorted(self._cameras):
            self.status(camera, False, {"reason": "shutdown"})
        info = self._client.publish(
            self.process_topic,
            json.dumps({"online": False, "client": self.client_id, "reason": "shutdown"}),
            qos=1,
            retain=True,
        )
        # QoS 1 messages go out in order, so the broker's acknowledgement of this last one covers the ones before.
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as e:
            logger.warning("MQTT: messages may be lost at shutdown: %s", e)
        self._client.disconnect()
        self._client.loop_stop()


# ---------------------------------------------------------------------------------------------------- fan-out


class SinkSet:
    """Several sinks as one; a sink that raises is logged (once per sink and method) and counted, never fatal."""

    def __init__(self, sinks: list[Sink] | tuple[Sink, ...] = ()) -> None:
        self.sinks = list(sinks)
        self.errors: dict[str, int] = {}
        self._warned: set[tuple[int, str]] = set()

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def _each(self, method: str, *args: Any) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(*args)
            except Exception as e:  # noqa: BLE001 - one broken sink must not take the others (or the camera) down
                name = type(sink).__name__
                self.errors[name] = self.errors.get(name, 0) + 1
                if (id(sink), method) not in self._warned:
                    self._warned.add((id(sink), method))
                    logger.warning("sink %s.%s failed: %s: %s", name, method, type(e).__name__, e)

    def emit(self, msg: dict[str, Any]) -> None:
        self._each("emit", msg)

    def emit_all(self, msgs: list[dict[str, Any]]) -> None:
        for m in msgs:
            self._each("emit", m)

    def status(self, camera: str, online: bool, info: dict[str, Any]) -> None:
        self._each("status", camera, online, info)

    def close(self) -> None:
        self._each("close")

    def summary(self) -> dict[str, Any]:
        """Per-sink counters for the final ``--json`` summary."""
        out: dict[str, Any] = {"errors": dict(self.errors)}
        for sink in self.sinks:
            stats = getattr(sink, "stats", None)
            out[type(sink).__name__] = dict(vars(stats)) if stats is not None else {}
        return out
