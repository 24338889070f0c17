"""Atomic file output: a reader (or a crash) never sees a half-written checkpoint, ONNX model, engine or JSON.

A result is written under a temporary name beside its target (``.<name>.<pid>.<random>.tmp``, or
``.<name>.<pid>.<random>.tmp<suffix>`` where the writer picks its format from the extension, as OpenCV does), its
bytes are fsynced, and only then is it renamed over the target and the folder's entry fsynced: after a crash or a
power loss the target is the old file or the complete new one. Temporaries whose writer process is gone are removed
by the next writer of the same target (:func:`remove_stale_temporaries`) or of the same folder
(:func:`sweep_temporaries`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def temporary_path(path: str | os.PathLike, *, keep_suffix: bool = False) -> Path:
    """Create an empty temporary file beside ``path`` and return its name (``keep_suffix``: it ends in ``path``'s
    extension). Removes the temporaries that killed writers of ``path`` left first. The file gets the permissions a
    plain ``open()`` would give (mkstemp makes it owner-only)."""
    path = Path(path)
    parent = _parent(path)
    if not parent.is_dir():
        raise FileNotFoundError(f"output folder {parent} does not exist")
    remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.",
                                   suffix=".tmp" + (path.suffix if keep_suffix else ""), dir=parent)
    except PermissionError:
        raise PermissionError(f"cannot write to {parent}: permission denied") from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush ``path``'s bytes to the device (a file written by another library, e.g. torch.save or OpenCV)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new file in ``folder`` survive a power loss (the folder's entry is flushed too)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a platform without folder handles (Windows): the rename is what it offers
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the data itself was synced
        pass
    finally:
        os.close(fd)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the finished temporary ``tmp`` over ``path``: its bytes fsynced first, the folder after the rename."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(_parent(Path(path)))
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically (fsynced, see the module
    docstring), on error it is removed. ``keep_suffix``: the temporary ends in ``path``'s extension.

    The parent folder must exist and be writable; the error says which folder when it is not.
    """
    tmp_path = temporary_path(path, keep_suffix=keep_suffix)
    try:
        yield tmp_path
        publish(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


# .<name>.<pid>.<random>.tmp[.<ext>]; the random part is absent in temporaries of earlier versions.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?:[^.]+\.)?tmp(?:\.[A-Za-z0-9]+)?$")


def _remove_if_orphaned(tmp: Path, name: str | None) -> bool:
    """Remove ``tmp`` when it is a temporary (of ``name``, if given) whose writer is gone; True if removed."""
    m = _TEMPORARY.match(tmp.name)
    if m is None or (name is not None and not tmp.name.startswith(f".{name}.")):
        return False
    # The name and the random part may hold digits too: every all-digit part could be the writer's pid, and the
    # file is left alone while any of them is a live process.
    pids = {int(part) for part in tmp.name[1:].split(".") if part.isdigit()}
    if any(pid == os.getpid() or _pid_alive(pid) for pid in pids):
        return False
    try:
        if tmp.is_dir() and not tmp.is_symlink():  # a folder being built by atomic_dir
            shutil.rmtree(tmp)
        else:
            tmp.unlink()
    except OSError:
        return False
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that killed writers of ``path`` left behind (``.<name>.<pid>.<random>.tmp[<ext>]``
    whose process is gone), so that interrupted runs never pile up hidden files; returns what was removed."""
    path = Path(path)
    parent = _parent(path)
    # Also the names of earlier versions' video temporaries (.<stem>.<pid>.tmp<ext>).
    candidates = set(parent.glob(f".{glob.escape(path.name)}.*.tmp*"))
    if path.suffix:
        candidates |= set(parent.glob(f".{glob.escape(path.stem)}.*.tmp{glob.escape(path.suffix)}"))
    return sorted(t for t in candidates if _remove_if_orphaned(t, path.name if t.name.startswith(f".{path.name}.")
                                                               else path.stem))


def sweep_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove every temporary in ``folder`` that a writer process now gone left behind (a folder of results whose
    names are not known in advance, such as event snapshots and clips); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(t for t in folder.glob(".*.tmp*") if _remove_if_orphaned(t, None))


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; on success it becomes ``path``, on error it is removed.

    So a folder of results is either the earlier run's or the new run's, never a mix of both. An existing non-empty
    ``path`` is refused (FileExistsError) unless ``replace``; then it is swapped out and deleted only after the new
    folder is in place.
    """
    path = Path(path).resolve()  # "." or "runs/" must still have a name and a parent to swap in
    parent = path.parent
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not replace:
        raise FileExistsError(f"{path} already holds files; pass --overwrite to replace them")
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it owner-only; results are for sharing like any folder
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(root)
