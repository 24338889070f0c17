"""Retention of event snapshots and clips: a size and an age limit, per camera and in total, oldest first.

A camera that runs for months writes a snapshot per event and, with ``clip: true``, a clip; without a bound they fill
the disk (the audit measured 18 MB per 6 minutes at 160×120 with clips). :class:`MediaStore` keeps the folder given to
``--snapshots`` within

- a total size (``--keep-mb``; default :func:`default_limit`: 1 GiB, or a quarter of the space the file system had
  free for them at start, whichever is less),
- an age (``--keep-hours``; default none),
- per camera, a size and an age (YAML ``keep_mb`` / ``keep_hours``; default none),

and writes nothing while the file system has less than :func:`reserve_bytes` free (5 % of its size, at most 256 MiB),
so a disk shared with other writers is not the one this process fills. Limits are enforced after every file written
and at start (files of earlier runs count: they are recognised by the event-id names the tracker gives them), by
deleting the oldest files first (by the event's time in the name, so a clip that its writer thread finished after
the next event's snapshot still goes before it; the modification time breaks ties and decides the age limit); files of
other names in the folder are never touched. What was
deleted and what could not be written are counted in the summary and the metrics.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MiB = 1 << 20
DEFAULT_MAX_BYTES = 1024 * MiB
DEFAULT_FREE_SHARE = 0.25  # of the space free (plus what our files already hold) at start
RESERVE_SHARE = 0.05
RESERVE_MAX = 256 * MiB
# The names EventTracker gives: <camera>-<kind>-<UTC stamp>-<frame>.jpg / .mp4 (events.Lifecycle ids).
MEDIA_NAME = re.compile(r"^(?P<camera>.+)-(?:anomaly|frozen|black|saturated|signal_lost)-"
                        r"(?P<stamp>\d{8}T\d{6}\.\d{3}Z)-(?:\d+|x)\.(?:jpg|mp4)$")
OTHER = ""  # the camera key of files of cameras this run does not watch


@dataclass(frozen=True)
class Limit:
    """A size (bytes) and an age (seconds) bound; None: no bound."""

    max_bytes: int | None = None
    max_age_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_bytes is not None and not (isinstance(self.max_bytes, int) and self.max_bytes >= 0):
            raise ValueError(f"a size limit must be a number of bytes >= 0, got {self.max_bytes!r}")
        if self.max_age_s is not None and not (isinstance(self.max_age_s, int | float) and math.isfinite(self.max_age_s)
                                               and self.max_age_s > 0):
            raise ValueError(f"an age limit must be a number of seconds > 0, got {self.max_age_s!r}")

    @classmethod
    def from_mb_hours(cls, mb: float | None, hours: float | None, what: str) -> Limit:
        for name, v in (("keep_mb", mb), ("keep_hours", hours)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
                                  or not v > 0):
                raise ValueError(f"{what}: {name} must be a number > 0, got {v!r}")
        return cls(None if mb is None else int(mb * MiB), None if hours is None else float(hours) * 3600.0)


def reserve_bytes(folder: str | os.PathLike) -> int:
    """Free space this process leaves on the file system of ``folder``: 5 % of its size, at most 256 MiB."""
    st = os.statvfs(folder)
    return int(min(RESERVE_MAX, RESERVE_SHARE * st.f_blocks * st.f_frsize))


def free_bytes(folder: str | os.PathLike) -> int:
    st = os.statvfs(folder)
    return int(st.f_bavail * st.f_frsize)


def default_limit(folder: str | os.PathLike, already: int = 0) -> int:
    """The total size kept when none is given: 1 GiB, or a quarter of the space free for media at start (the free
    space plus what earlier runs' media already take), whichever is less."""
    return int(min(DEFAULT_MAX_BYTES, DEFAULT_FREE_SHARE * (free_bytes(folder) + already)))


@dataclass
class _Entry:
    camera: str
    size: int
    mtime: float
    stamp: str  # the event's UTC time from the name (YYYYMMDDTHHMMSS.mmmZ sorts in time order)

    @property
    def age_order(self) -> tuple[str, float]:
        return self.stamp, self.mtime


def _entry(camera: str, path: Path) -> _Entry:
    st = path.stat()
    m = MEDIA_NAME.match(path.name)
    return _Entry(camera, st.st_size, st.st_mtime, m.group("stamp") if m else "")


@dataclass
class _Counts:
    deleted_files: int = 0
    deleted_bytes: int = 0
    skipped: int = 0  # files not written (no room even after deleting the oldest)


class MediaStore:
    """The snapshot / clip folder of one watch and its limits (see the module docstring). Thread-safe: the event
    trackers write snapshots from the loop and clips from their writer threads.

    ``total``: the total limit (its ``max_bytes`` None: :func:`default_limit`); ``cameras``: per-camera limits of the
    cameras this run watches; ``clock``: unix time (a test may give its own).
    """

    def __init__(self, folder: str | os.PathLike, total: Limit | None = None, cameras: dict[str, Limit] | None = None,
                 clock=time.time) -> None:
        self.folder = Path(folder)
        self.total = total or Limit()
        self.cameras = dict(cameras or {})
        self.clock = clock
        self._lock = threading.Lock()
        self._files: dict[Path, _Entry] = {}
        self._counts: dict[str, _Counts] = {}
        self._last_expiry = -math.inf
        self._scan()
        if self.total.max_bytes is None:
            self.total = Limit(default_limit(self.folder, self.bytes()), self.total.max_age_s)
            self.limit_source = "default"
        else:
            self.limit_source = "--keep-mb"
        self.reserve = reserve_bytes(self.folder)
        with self._lock:
            self._enforce(None)
        logger.info("snapshots and clips in %s: %d file(s), %.1f MB of at most %.1f MB (%s)", self.folder,
                    len(self._files), self.bytes() / MiB, self.total.max_bytes / MiB, self.limit_source)

    # ------------------------------------------------------------------ bookkeeping

    def camera_of(self, name: str) -> str | None:
        """The camera a media file name belongs to (OTHER for a camera this run does not watch); None: not ours."""
        from .events import safe_name

        m = MEDIA_NAME.match(name)
        if m is None:
            return None
        for camera in sorted(self.cameras, key=len, reverse=True):
            if m.group("camera") == safe_name(camera):
                return camera
        return OTHER

    def _scan(self) -> None:
        for path in self.folder.iterdir():
            camera = self.camera_of(path.name)
            if camera is None or not path.is_file():
                continue
            self._files[path] = _entry(camera, path)

    def bytes(self, camera: str | None = None) -> int:
        return sum(e.size for e in self._files.values() if camera is None or e.camera == camera)

    def _count(self, camera: str) -> _Counts:
        return self._counts.setdefault(camera, _Counts())

    def _delete(self, path: Path, why: str) -> None:
        entry = self._files.pop(path)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            logger.warning("could not delete %s (%s): %s", path, why, e)
            return
        c = self._count(entry.camera)
        c.deleted_files += 1
        c.deleted_bytes += entry.size
        logger.debug("deleted %s (%s)", path, why)

    def _enforce(self, keep: Path | None) -> None:
        """Delete the oldest files until every limit holds (``keep``, the file just written, goes last)."""
        now = self.clock()
        for camera, limit in [(c, lim) for c, lim in self.cameras.items()] + [(None, self.total)]:
            mine = sorted((p for p, e in self._files.items() if camera is None or e.camera == camera),
                          key=lambda p: (p == keep, self._files[p].age_order))
            if limit.max_age_s is not None:
                for path in list(mine):
                    if now - self._files[path].mtime > limit.max_age_s and path != keep:
                        self._delete(path, f"older than {limit.max_age_s / 3600:g} h")
                        mine.remove(path)
            if limit.max_bytes is not None:
                used = sum(self._files[p].size for p in mine)
                while mine and used > limit.max_bytes:
                    path = mine.pop(0)
                    used -= self._files[path].size
                    self._delete(path, f"over {limit.max_bytes / MiB:.1f} MB")

    # ------------------------------------------------------------------ the tracker's calls

    def room(self, camera: str) -> bool:
        """Before writing a file for ``camera``: make sure the file system keeps its reserve (deleting the oldest
        media if needed); False (counted as skipped) when it cannot."""
        with self._lock:
            while free_bytes(self.folder) < self.reserve and self._files:
                oldest = min(self._files, key=lambda p: self._files[p].age_order)
                self._delete(oldest, "the file system is nearly full")
            if free_bytes(self.folder) < self.reserve:
                self._count(camera).skipped += 1
                logger.warning("camera %s: snapshot / clip not written: %s has less than %.0f MB free", camera,
                               self.folder, self.reserve / MiB)
                return False
            return True

    def added(self, camera: str, path: str | os.PathLike) -> bool:
        """After writing ``path`` for ``camera`` (a new file, or one rewritten): account for it and enforce the limits.
        False when the file alone breaks a limit and was deleted again (counted as skipped)."""
        path = Path(path)
        with self._lock:
            try:
                self._files[path] = _entry(camera, path)
            except FileNotFoundError:
                return False
            self._enforce(path)
            self._last_expiry = self.clock()
            if path in self._files:
                return True
            self._count(camera).skipped += 1
            return False

    def expire(self, every_s: float = 60.0) -> None:
        """Apply the age limits now (at most every ``every_s`` seconds; cheap to call from the loop)."""
        now = self.clock()
        if now - self._last_expiry < every_s:
            return
        with self._lock:
            self._last_expiry = now
            self._enforce(None)

    def summary(self) -> dict[str, Any]:
        """For ``--json`` and the metrics: bytes and files kept, deleted and skipped, per camera and in total."""
        with self._lock:
            names = sorted(set(self.cameras) | {e.camera for e in self._files.values()} | set(self._counts))
            cams = {}
            for camera in names:
                c = self._counts.get(camera, _Counts())
                cams[camera or "(other)"] = {
                    "bytes": self.bytes(camera), "files": sum(1 for e in self._files.values() if e.camera == camera),
                    "deleted_files": c.deleted_files, "deleted_bytes": c.deleted_bytes, "skipped": c.skipped,
                    "max_bytes": self.cameras.get(camera, Limit()).max_bytes,
                    "max_age_s": self.cameras.get(camera, Limit()).max_age_s,
                }
            return {
                "folder": str(self.folder),
                "bytes": self.bytes(),
                "files": len(self._files),
                "max_bytes": self.total.max_bytes,
                "max_bytes_from": self.limit_source,
                "max_age_s": self.total.max_age_s,
                "reserve_bytes": self.reserve,
                "deleted_files": sum(c.deleted_files for c in self._counts.values()),
                "deleted_bytes": sum(c.deleted_bytes for c in self._counts.values()),
                "skipped": sum(c.skipped for c in self._counts.values()),
                "cameras": cams,
            }
