"""Turn user errors into one readable line on stderr and a non-zero exit."""

from __future__ import annotations

import typer

# Exit codes: 1 = bad input or failed check, 2 = usage error (typer/click), 3 = missing backend or failed build.
EXIT_BAD_INPUT = 1
EXIT_BACKEND = 3


def run_app(app: typer.Typer, args: list[str] | None = None) -> int:
    try:
        app(args=args, standalone_mode=True)
    except SystemExit as e:  # click exits through SystemExit in standalone mode
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


class user_errors:  # noqa: N801 - used as a context manager, reads like a statement
    """Context manager for command bodies: ValueError/FileNotFoundError → exit 1, RuntimeError/ImportError → exit 3."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, (typer.Exit, typer.Abort, KeyboardInterrupt)):
            return False
        if isinstance(exc, (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
            raise fail(str(exc), EXIT_BAD_INPUT) from None
        if isinstance(exc, (RuntimeError, ImportError, OSError)):
            raise fail(str(exc), EXIT_BACKEND) from None
        return False
