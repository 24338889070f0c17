"""The CLI's error contract: one readable ``error:`` line on stderr and a documented exit code, never a traceback.

Exit codes (README, "Exit codes"):
    0    success
    1    bad input, an unwritable output or a failed check (ValueError, a missing / unreadable / unwritable file)
    2    a usage error (Click's convention: an unknown option, a missing required option, a bad type)
    3    a missing backend, a failed build or no CUDA device (RuntimeError, ImportError)
    130  interrupted (Ctrl-C / SIGINT), with one line saying what was kept
"""

from __future__ import annotations

import errno
import signal
from collections.abc import Callable

import typer

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_BACKEND = 3
EXIT_INTERRUPTED = 130

# OSErrors that are the user's input or output (a path), not a broken installation.
_PATH_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EEXIST, errno.ENOTDIR,
                errno.EISDIR, errno.ENAMETOOLONG, errno.EDQUOT, errno.ELOOP}


class _Interrupt:
    """Remembers that SIGINT arrived: a library that wraps the KeyboardInterrupt in its own exception (the ONNX
    exporter does) must still end as an interruption, not as that library's error text."""

    seen = False

    @classmethod
    def handler(cls, signum, frame) -> None:
        cls.seen = True
        raise KeyboardInterrupt


def run_app(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run the Typer app as the console script does; returns the exit code."""
    previous = signal.getsignal(signal.SIGINT)
    installed = False
    try:
        signal.signal(signal.SIGINT, _Interrupt.handler)
        installed = True
    except ValueError:  # not the main thread: leave Python's default handler in place
        pass
    mask = None
    if installed and hasattr(signal, "pthread_sigmask"):
        # The signal mask is inherited across exec: a parent that blocked SIGINT or SIGTERM (some libraries do in
        # the thread that spawns) would leave Ctrl-C and a supervisor's stop pending until the command ended on its
        # own. The commands handle both, so they take them unblocked.
        mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    _Interrupt.seen = False
    code = EXIT_OK
    try:
        app(args=args, standalone_mode=True)
    except SystemExit as e:  # Click exits through SystemExit in standalone mode
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        code = EXIT_BAD_INPUT
    finally:
        if installed:
            signal.signal(signal.SIGINT, previous)
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if _Interrupt.seen and code != EXIT_INTERRUPTED:
        # Interrupted outside a command body (user_errors reports its own, with what was kept).
        typer.echo("error: interrupted; nothing was written", err=True)
        return EXIT_INTERRUPTED
    return code


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def exit_code_for(exc: BaseException) -> int | None:
    """The contract's exit code for an exception a command body raised, or None to let it propagate."""
    if isinstance(exc, (ValueError, LookupError, EOFError, UnicodeError)):
        return EXIT_BAD_INPUT
    if isinstance(exc, OSError) and (exc.errno in _PATH_ERRNOS or type(exc) in (
            FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return EXIT_BAD_INPUT
    if isinstance(exc, (RuntimeError, ImportError, OSError)):
        return EXIT_BACKEND
    return None


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.filename is not None and str(exc.filename) not in text:
        text = f"{exc.filename}: {text}"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first


class user_errors:  # noqa: N801 - used as a context manager, reads like a statement
    """Context manager for command bodies: bad input → exit 1, missing backend → exit 3, Ctrl-C → exit 130.

    ``kept``: called on Ctrl-C for the part of the line that says what survived (e.g. "kept runs/x/last.pt
    (epoch 3 of 20); continue with --resume"); without it the line says nothing was written.
    """

    def __init__(self, kept: Callable[[], str] | None = None) -> None:
        self.kept = kept

    def __enter__(self) -> user_errors:
        _Interrupt.seen = False
        return self

    def _interrupted(self) -> typer.Exit:
        what = "nothing was written"
        if self.kept is not None:
            try:
                what = self.kept() or what
            except Exception:  # noqa: BLE001 - the note must never hide the interruption itself
                pass
        return fail(f"interrupted; {what}", EXIT_INTERRUPTED)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, (typer.Exit, typer.Abort)):
            return False
        if isinstance(exc, KeyboardInterrupt) or _Interrupt.seen:
            raise self._interrupted() from None
        code = exit_code_for(exc)
        if code is None:
            return False
        raise fail(_message(exc), code) from None
